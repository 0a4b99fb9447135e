import { ConfigError, loadConfig } from '../../src/config/load.js';
import { sanitizeStatement } from '../../src/observability/tracing.js';
import { tracingRequested } from '../../src/observability/trace-hooks.js';

describe('statement text on pg spans', () => {
  it('replaces every literal with ?, keeping placeholders, identifiers and keywords', () => {
    expect(sanitizeStatement(`select id, email from users where email = 'someone@example.com' and "users"."x" = 5 limit 1`)).toBe(
      'select id, email from users where email = ? and "users"."x" = ? limit ?',
    );
    expect(sanitizeStatement(`insert into t ("a", "b2") values ($1, $2), ('it''s', E'a\\'b', 3.5e3, $tag$ x'y $tag$, $$z$$) returning id`)).toBe(
      'insert into t ("a", "b2") values ($1, $2), (?, ?, ?, ?, ?) returning id',
    );
    expect(sanitizeStatement(`update type set type='x' where t.n1 > 10 and "quoted ""name""" is null`)).toBe(
      `update type set type=? where t.n1 > ? and "quoted ""name""" is null`,
    );
  });

  it('leaves a bound statement as it is', () => {
    const sql = 'select * from sessions where user_id = $1 and revoked_at is null order by created_at desc limit $2';
    expect(sanitizeStatement(sql)).toBe(sql);
  });
});

describe('tracingRequested', () => {
  it.each([
    [{}, false],
    [{ OTEL_TRACES_EXPORTER: '' }, false],
    [{ OTEL_TRACES_EXPORTER: 'none' }, false],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, false],
    [{ OTEL_TRACES_EXPORTER: 'otlp' }, true],
    [{ OTEL_TRACES_EXPORTER: 'none, console' }, true],
    [{ OTEL_TRACES_EXPORTER: 'otlp', OTEL_SDK_DISABLED: 'true' }, false],
  ])('%j: %s', (env, expected) => {
    expect(tracingRequested(env)).toBe(expected);
  });
});

describe('the OTEL_* variables', () => {
  const problems = (env: Record<string, string>) => {
    try {
      loadConfig(env);
      return [];
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return error.problems.map((p) => p.name);
    }
  };

  it('accept the standard values', () => {
    const config = loadConfig({ OTEL_TRACES_EXPORTER: 'otlp,console', OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' });
    expect(config.OTEL_TRACES_EXPORTER).toEqual(['otlp', 'console']);
    expect(config.OTEL_TRACES_SAMPLER_ARG).toBe(0.25);
    expect(config.OTEL_SERVICE_NAME).toBe('latchkey');
  });

  it('refuse what the server cannot do, naming the variable', () => {
    expect(problems({ OTEL_TRACES_EXPORTER: 'jaeger' })).toEqual(['OTEL_TRACES_EXPORTER']);
    expect(problems({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toEqual(['OTEL_EXPORTER_OTLP_PROTOCOL']);
    expect(problems({ OTEL_TRACES_SAMPLER: 'sometimes' })).toEqual(['OTEL_TRACES_SAMPLER']);
    expect(problems({ OTEL_TRACES_SAMPLER_ARG: '1.5' })).toEqual(['OTEL_TRACES_SAMPLER_ARG']);
    expect(problems({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toEqual(['OTEL_EXPORTER_OTLP_ENDPOINT']);
  });
});

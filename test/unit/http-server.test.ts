import { createHttpServer } from '../../src/http/server.js';

describe('HTTP probe server', () => {
  it('answers 500 without details when metrics cannot be collected, and keeps serving', async () => {
    const http = createHttpServer({
      ready: () => true,
      jwks: () => '{"keys":[]}',
      metrics: async () => {
        throw new Error('collector exploded: secret-internal-detail');
      },
    });
    const port = await http.listen(0, '127.0.0.1');
    try {
      const response = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(response.status).toBe(500);
      expect(await response.text()).toBe('{"error":"metrics unavailable"}');
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    } finally {
      await http.close();
    }
  });

  it('answers HEAD like GET without a body', async () => {
    const http = createHttpServer({ ready: () => false, jwks: () => '{"keys":[]}', metrics: async () => ({ contentType: 'text/plain', body: '' }) });
    const port = await http.listen(0, '127.0.0.1');
    try {
      const response = await fetch(`http://127.0.0.1:${port}/readyz`, { method: 'HEAD' });
      expect(response.status).toBe(503);
      expect(await response.text()).toBe('');
    } finally {
      await http.close();
    }
  });
});

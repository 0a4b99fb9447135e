/** One sample of an unlabelled metric from the server's /metrics endpoint; undefined when absent. */
export async function metricValue(httpPort: number, name: string): Promise<number | undefined> {
  const body = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const value = new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1];
  return value === undefined ? undefined : Number(value);
}

/** The status /readyz answers with now. */
export async function readyzStatus(httpPort: number): Promise<number> {
  return (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status;
}

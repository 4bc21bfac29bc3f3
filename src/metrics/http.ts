/**
 * The metrics HTTP endpoint (node:http, no framework). Read-only and unauthenticated, like every
 * Prometheus exporter: GET (or HEAD) `/metrics` answers the exposition in the Prometheus text
 * format, GET `/healthz` answers `ok` (200) or why not (503); anything else is 404, any other
 * method 405. It serves plain HTTP: bind it to an address only the scraper can reach.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';

/** `HOST:PORT`, `:PORT` (every interface) or `[IPv6]:PORT`. */
export interface ListenAddress {
  /** Undefined: every interface. */
  readonly host: string | undefined;
  readonly port: number;
}

export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65535) throw new Error(`metrics address ${JSON.stringify(text)} must be HOST:PORT, :PORT or [IPv6]:PORT`);
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? undefined : host, port };
}

export interface MetricsLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface MetricsServerOptions {
  readonly address: ListenAddress;
  /** The exposition text; called once per scrape. */
  render(): Promise<string>;
  /** `/healthz`: 200 when ok, else 503 with the message. Always ok unless given. */
  health?(): { ok: boolean; message: string };
  readonly log: MetricsLogger;
}

export interface MetricsServer {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: string, headers: Record<string, string> = {}): void => {
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (path !== '/metrics' && path !== '/healthz') return send(404, 'not found: try /metrics or /healthz\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'read-only: GET or HEAD\n', { Allow: 'GET, HEAD' });
    if (path === '/healthz') {
      const h = opts.health?.() ?? { ok: true, message: 'ok' };
      return send(h.ok ? 200 : 503, `${h.message}\n`);
    }
    opts.render().then(
      (text) => send(200, text, { 'Content-Type': Registry.PROMETHEUS_CONTENT_TYPE }),
      (err: unknown) => {
        opts.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'metrics: scrape failed');
        send(500, `scrape failed: ${err instanceof Error ? err.message : String(err)}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: opts.address.port, ...(opts.address.host === undefined ? {} : { host: opts.address.host }) }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => opts.log.warn({ err: err.message }, 'metrics: server error'));
  const address = server.address() as AddressInfo;
  opts.log.info({ address: address.address, port: address.port }, 'metrics: serving /metrics and /healthz over plain HTTP');
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

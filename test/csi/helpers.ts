/** Shared test helpers: captured logs, temp dirs, real grpc-js clients on the server's socket. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, credentials, type ServiceError } from '@grpc/grpc-js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { csiProto } from '../../src/csi/proto.js';

/** A debug-level logger whose JSON lines are kept in `lines`. */
export function captureLogger(): { logger: Logger; lines: string[]; records: () => Record<string, unknown>[] } {
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(s) } });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** A fresh directory under the OS temp dir, removed by `cleanup`. Kept short: socket paths are limited. */
export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'fcsi-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Every deadline in these tests: a call that hangs fails with DEADLINE_EXCEEDED instead of stalling the suite. */
export const CALL_OPTIONS = (): { deadline: number } => ({ deadline: Date.now() + 10_000 });

/** Promisifies one callback-style client call. */
export function rpc<Res>(invoke: (callback: (err: ServiceError | null, res?: Res) => void) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    invoke((err, res) => {
      if (err) reject(err);
      else if (res === undefined) reject(new Error('no response'));
      else resolve(res);
    });
  });
}

/** The rejection of a call, as a gRPC ServiceError; fails if the call succeeded. */
export async function rpcError(call: Promise<unknown>): Promise<ServiceError> {
  try {
    await call;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('expected the call to fail');
}

/** Real typed clients of every CSI service on one socket. */
export function clients(socketPath: string) {
  const proto = csiProto();
  const address = `unix://${socketPath}`;
  const creds = credentials.createInsecure();
  const all = {
    identity: new proto.Identity(address, creds),
    controller: new proto.Controller(address, creds),
    groupController: new proto.GroupController(address, creds),
    node: new proto.Node(address, creds),
    snapshotMetadata: new proto.SnapshotMetadata(address, creds),
    raw: new Client(address, creds),
  };
  return { ...all, close: () => Object.values(all).forEach((c) => c.close()) };
}

/** Calls a method by path with raw bytes (for methods no service defines). */
export function rawCall(client: Client, path: string): Promise<Buffer> {
  return rpc<Buffer>((cb) =>
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
      CALL_OPTIONS(),
      cb,
    ),
  );
}

/** A promise with its resolve function, for handlers the test releases. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

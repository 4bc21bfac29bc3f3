/**
 * The one bridge between async handlers and grpc-js's callback API.
 *
 * grpc-js calls a unary handler as `(call, callback)` and does not await a returned promise: an
 * async handler that rejects would never answer and leave an unhandled rejection. `unary()` awaits
 * the handler, sends its result, and turns every thrown or rejected value into a gRPC status through
 * ./status.ts. `serverStreaming()` does the same for server-streaming RPCs (SnapshotMetadata), with
 * the handler written as an async generator. `adaptService()` applies them to a whole service.
 *
 * Each call is logged once when it ends, with method, duration, status code and the request with
 * secrets stripped (./sanitize.ts). Probe runs every few seconds, so it is logged at debug level.
 * Errors the client caused (INVALID_ARGUMENT, NOT_FOUND, …) log at warn; INTERNAL, UNKNOWN and
 * failures inside the adapter log at error. With an `observer` (metrics), every call is also counted
 * there, with its method, status code and duration.
 */
import { once } from 'node:events';
import { status, type Metadata, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log/logger.js';
import type { CallObserver } from '../metrics/csi.js';
import { sanitizeForLog } from './sanitize.js';
import { statusName, toGrpcStatus, type GrpcStatus } from './status.js';

/** What a handler gets besides the request. */
export interface CallContext {
  /** Full method path, e.g. `/csi.v1.Controller/CreateVolume`. */
  readonly method: string;
  /** Logger bound to this call's method. */
  readonly logger: Logger;
  /** Aborted when the client cancels the call or its deadline passes. */
  readonly signal: AbortSignal;
  readonly metadata: Metadata;
}

export type UnaryHandler<Req, Res> = (request: Req, ctx: CallContext) => Promise<Res>;
export type ServerStreamHandler<Req, Res> = (request: Req, ctx: CallContext) => AsyncIterable<Res>;

/**
 * The async form of a generated `…Handlers` interface: every method optional (a missing one answers
 * UNIMPLEMENTED), unary methods as UnaryHandler, server-streaming ones as ServerStreamHandler.
 * E.g. `AsyncService<ControllerHandlers>`.
 */
export type AsyncService<H> = {
  [K in keyof H as string extends K ? never : K]?: H[K] extends grpc.handleUnaryCall<infer Req, infer Res>
    ? UnaryHandler<Req, Res>
    : H[K] extends grpc.handleServerStreamingCall<infer Req, infer Res>
      ? ServerStreamHandler<Req, Res>
      : never;
};

export interface AdapterOptions {
  /** Parent logger; each call logs through a child with `method`. */
  readonly logger: Logger;
  /** Methods logged at debug level when they succeed (full paths). Probe unless set. */
  readonly quietMethods?: ReadonlySet<string>;
  /** Told of every finished call (metrics). */
  readonly observer?: CallObserver;
}

export const DEFAULT_QUIET_METHODS: ReadonlySet<string> = new Set(['/csi.v1.Identity/Probe']);

/** Status codes the client caused: logged at warn, not error. */
const CLIENT_CODES: ReadonlySet<status> = new Set([
  status.CANCELLED,
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.FAILED_PRECONDITION,
  status.ABORTED,
  status.OUT_OF_RANGE,
  status.UNIMPLEMENTED,
  status.RESOURCE_EXHAUSTED,
  status.UNAVAILABLE,
  status.DEADLINE_EXCEEDED,
]);

interface CallLike {
  readonly metadata: Metadata;
  readonly request: unknown;
  on(event: 'cancelled', listener: () => void): unknown;
  removeListener(event: 'cancelled', listener: () => void): unknown;
}

/** Per-call bookkeeping shared by both adapters: context, cancellation, the end-of-call log line. */
function beginCall(method: string, call: CallLike, options: AdapterOptions) {
  const started = process.hrtime.bigint();
  const logger = options.logger.child({ method });
  const controller = new AbortController();
  const onCancelled = (): void => controller.abort(Object.assign(new Error(`${method} cancelled by the client`), { name: 'AbortError' }));
  call.on('cancelled', onCancelled);
  const ctx: CallContext = { method, logger, signal: controller.signal, metadata: call.metadata };
  const quiet = (options.quietMethods ?? DEFAULT_QUIET_METHODS).has(method);

  const finish = (outcome: { status: GrpcStatus; err?: unknown; extra?: Record<string, unknown> } | { ok: true; response?: unknown; extra?: Record<string, unknown> }): void => {
    call.removeListener('cancelled', onCancelled);
    const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
    options.observer?.observeCall(method, 'ok' in outcome ? 'OK' : statusName(outcome.status.code), durationMs / 1000);
    const base = { durationMs, req: sanitizeForLog(call.request), ...outcome.extra };
    if ('ok' in outcome) {
      const record = { ...base, code: 'OK' };
      if (quiet) logger.debug(record, 'call succeeded');
      else if (logger.isLevelEnabled('debug')) logger.debug({ ...record, res: sanitizeForLog(outcome.response) }, 'call succeeded');
      else logger.info(record, 'call succeeded');
      return;
    }
    const record = { ...base, code: statusName(outcome.status.code), details: outcome.status.details };
    if (CLIENT_CODES.has(outcome.status.code)) logger.warn(record, 'call failed');
    else logger.error({ ...record, err: outcome.err }, 'call failed');
  };
  return { ctx, finish };
}

/** Wraps an async unary handler for grpc-js. The returned function never throws or rejects. */
export function unary<Req, Res>(method: string, handler: UnaryHandler<Req, Res>, options: AdapterOptions): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const { ctx, finish } = beginCall(method, call, options);
    void (async () => {
      let response: Res;
      try {
        response = await handler(call.request, ctx);
      } catch (err) {
        const st = toGrpcStatus(err);
        finish({ status: st, err });
        callback({ code: st.code, details: st.details }, null);
        return;
      }
      finish({ ok: true, response });
      callback(null, response);
    })().catch((err: unknown) => {
      // Only reachable if logging or grpc-js's callback itself throws.
      ctx.logger.error({ err }, 'unary adapter failed');
      try {
        callback({ code: status.INTERNAL, details: 'internal error in the call adapter' }, null);
      } catch {
        // The call is beyond answering; it has been logged.
      }
    });
  };
}

/**
 * Wraps an async-generator handler for a server-streaming RPC. Messages are written with
 * backpressure (waits for 'drain'); the generator is closed (its `finally` runs) when the client
 * cancels. A thrown error ends the stream with the mapped status.
 */
export function serverStreaming<Req, Res>(
  method: string,
  handler: ServerStreamHandler<Req, Res>,
  options: AdapterOptions,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    const { ctx, finish } = beginCall(method, call, options);
    void (async () => {
      let messages = 0;
      try {
        for await (const message of handler(call.request, ctx)) {
          if (ctx.signal.aborted) break;
          messages++;
          if (!call.write(message)) await once(call, 'drain', { signal: ctx.signal });
        }
        if (ctx.signal.aborted) throw ctx.signal.reason;
      } catch (err) {
        const st = ctx.signal.aborted ? toGrpcStatus(ctx.signal.reason) : toGrpcStatus(err);
        finish({ status: st, err, extra: { messages } });
        call.emit('error', { code: st.code, details: st.details });
        return;
      }
      finish({ ok: true, extra: { messages } });
      call.end();
    })().catch((err: unknown) => {
      ctx.logger.error({ err }, 'streaming adapter failed');
      try {
        call.emit('error', { code: status.INTERNAL, details: 'internal error in the call adapter' });
      } catch {
        // The call is beyond answering; it has been logged.
      }
    });
  };
}

/**
 * Turns an AsyncService into the callback implementation grpc-js's `addService` takes. Methods the
 * definition has but the service lacks are left out, so grpc-js answers them UNIMPLEMENTED. A
 * method the service has but the definition lacks is a bug and throws.
 */
export function adaptService(definition: ServiceDefinition, service: object, options: AdapterOptions): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  const handlers = service as Record<string, unknown>;
  for (const name of Object.keys(handlers)) {
    if (!Object.hasOwn(definition, name)) throw new Error(`BUG: service has method ${name} that the proto does not define`);
  }
  for (const [name, method] of Object.entries(definition)) {
    const handler = handlers[name];
    if (handler === undefined) continue;
    if (typeof handler !== 'function') throw new Error(`BUG: ${method.path} handler is not a function`);
    if (method.requestStream) throw new Error(`BUG: ${method.path} is client-streaming; no adapter for that`);
    impl[name] = method.responseStream
      ? serverStreaming(method.path, handler as ServerStreamHandler<unknown, unknown>, options)
      : unary(method.path, handler as UnaryHandler<unknown, unknown>, options);
  }
  return impl;
}

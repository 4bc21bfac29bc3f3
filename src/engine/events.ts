/**
 * Engine events on a diagnostics channel (node:diagnostics_channel), so observers — metrics,
 * tests — see what the data path does without the data path depending on them. Publishing costs
 * nothing when nobody subscribes.
 */
import diagnostics_channel from 'node:diagnostics_channel';

export const ENGINE_CHANNEL = 'flashcsi:engine';

export type EngineEvent =
  /** A metadata operation closed the gate and waits for in-flight I/O to finish. */
  | { readonly type: 'quiesce'; readonly dir: string; readonly op: string; readonly writers: number; readonly readers: number }
  /** Grains were copied into the newest checkpoint (copy-on-write). */
  | { readonly type: 'copy'; readonly dir: string; readonly grains: number; readonly bytes: number }
  /** A write or checkpoint read must wait for grain tokens another holds (sent as the wait starts). */
  | { readonly type: 'token-wait'; readonly dir: string; readonly grains: number }
  /** A checkpoint was cut: total time, of which draining in-flight writes and the metadata update. */
  | { readonly type: 'cut'; readonly dir: string; readonly name: string; readonly micros: number; readonly drainMicros: number; readonly metaMicros: number }
  /** Rollback progress: grains restored so far out of the total. */
  | { readonly type: 'rollback-progress'; readonly dir: string; readonly checkpoint: string; readonly done: number; readonly total: number };

const channel = diagnostics_channel.channel(ENGINE_CHANNEL);

export function publish(event: EngineEvent): void {
  if (channel.hasSubscribers) channel.publish(event);
}

export function subscribe(listener: (event: EngineEvent) => void): () => void {
  const handler = (message: unknown): void => listener(message as EngineEvent);
  diagnostics_channel.subscribe(ENGINE_CHANNEL, handler);
  return () => diagnostics_channel.unsubscribe(ENGINE_CHANNEL, handler);
}

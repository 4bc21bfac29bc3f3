/**
 * The client side of the handshake, for sockets that are handed to the Linux kernel's nbd driver.
 * The kernel never negotiates: whoever attaches a device connects, negotiates in user space and
 * gives the kernel the connected socket (netlink NBD_CMD_CONNECT / RECONFIGURE), together with the
 * size and transmission flags the server announced. This negotiates the way nbd-client does, which
 * is what a kernel-attached server has always seen:
 *
 *   S: NBDMAGIC IHAVEOPT flags        (FIXED_NEWSTYLE required)
 *   C: client flags                   (C_FIXED_NEWSTYLE, + C_NO_ZEROES when offered)
 *   C: OPT_GO name, 0 info requests   (structured replies never: the kernel reads simple replies only)
 *   S: REP_INFO EXPORT (size, flags) … ACK  → transmission
 *
 * After the ACK the server sends nothing until it gets a request, so no byte of the transmission
 * phase can have been read here. `handOver()` then stops Node reading the socket and returns its
 * file descriptor for the kernel; the kernel takes its own reference to the socket, so the caller
 * closes ours afterwards (a close, never a shutdown, which would end the connection).
 */
import net from 'node:net';

import { FlashcsiError } from '../errors.js';
import { ClientFlag, CLIENT_FLAGS_SIZE, GREETING_SIZE, HandshakeFlag, Info, NBD_IHAVEOPT, NBD_MAGIC, NBD_OPT_REPLY_MAGIC, OPTION_REPLY_HEADER_SIZE, Opt, Rep, REP_ERR_BIT, repName } from './protocol.js';

/** Where an NBD server listens: a unix socket (the node's data path) or TCP (only when asked for). */
export type NbdAddress = { readonly path: string } | { readonly host: string; readonly port: number };

export type NbdClientErrorCode =
  /** The server's socket could not be reached, or the connection failed during the handshake. */
  | 'UNREACHABLE'
  /** The server broke the protocol (not newstyle, malformed replies, bytes after GO). */
  | 'PROTOCOL_ERROR'
  /** The server refused the export (NBD_REP_ERR_*). */
  | 'REFUSED'
  /** The handshake took longer than its deadline. */
  | 'TIMEOUT';

export class NbdClientError extends FlashcsiError<NbdClientErrorCode> {}

/** A connected, negotiated socket, ready for the transmission phase. */
export interface NegotiatedSocket {
  readonly socket: net.Socket;
  /** Export size in bytes. */
  readonly size: bigint;
  /** Transmission flags (TransmissionFlag). */
  readonly flags: number;
}

export function describeAddress(a: NbdAddress): string {
  return 'path' in a ? a.path : `${a.host}:${a.port}`;
}

/** A reader that hands out exact byte counts from a socket, with one deadline for the whole handshake. */
class HandshakeReader {
  private chunks: Buffer[] = [];
  private size = 0;
  private wake: (() => void) | undefined;
  private failure: Error | undefined;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.size += d.length;
      this.wake?.();
    });
    const fail = (err: Error): void => {
      this.failure ??= err;
      this.wake?.();
    };
    socket.on('error', (err) => fail(new NbdClientError('UNREACHABLE', `NBD server connection failed: ${err.message}`, { cause: err })));
    socket.on('close', () => fail(new NbdClientError('PROTOCOL_ERROR', 'the NBD server closed the connection during the handshake')));
  }

  async take(n: number): Promise<Buffer> {
    while (this.size < n) {
      if (this.failure !== undefined) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
    const all = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.size -= n;
    return all.subarray(0, n);
  }

  /** Bytes received beyond what was taken. */
  get leftover(): number {
    return this.size;
  }

  fail(err: Error): void {
    this.failure ??= err;
    this.wake?.();
  }

  detach(): void {
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
  }
}

/** Connects to `address` and negotiates `exportName` as nbd-client does (see the module comment). */
export async function connectAndNegotiate(address: NbdAddress, exportName: string, timeoutMs = 10_000): Promise<NegotiatedSocket> {
  const socket = 'path' in address ? net.connect(address.path) : net.connect({ host: address.host, port: address.port, noDelay: true });
  const reader = new HandshakeReader(socket);
  const timer = setTimeout(() => reader.fail(new NbdClientError('TIMEOUT', `NBD handshake with ${describeAddress(address)} took longer than ${timeoutMs} ms`)), timeoutMs);
  try {
    const greeting = await reader.take(GREETING_SIZE);
    if (greeting.readBigUInt64BE(0) !== NBD_MAGIC || greeting.readBigUInt64BE(8) !== NBD_IHAVEOPT) {
      throw new NbdClientError('PROTOCOL_ERROR', `${describeAddress(address)} is not a newstyle NBD server`);
    }
    const handshakeFlags = greeting.readUInt16BE(16);
    if ((handshakeFlags & HandshakeFlag.FixedNewstyle) === 0) throw new NbdClientError('PROTOCOL_ERROR', 'the NBD server does not speak fixed newstyle');
    const clientFlags = Buffer.alloc(CLIENT_FLAGS_SIZE);
    clientFlags.writeUInt32BE(ClientFlag.FixedNewstyle | (handshakeFlags & HandshakeFlag.NoZeroes ? ClientFlag.NoZeroes : 0));
    const name = Buffer.from(exportName, 'utf8');
    const go = Buffer.alloc(16 + 4 + name.length + 2);
    go.writeBigUInt64BE(NBD_IHAVEOPT, 0);
    go.writeUInt32BE(Opt.Go, 8);
    go.writeUInt32BE(4 + name.length + 2, 12);
    go.writeUInt32BE(name.length, 16);
    name.copy(go, 20);
    go.writeUInt16BE(0, 20 + name.length); // no information requests: the kernel could not use them
    socket.write(Buffer.concat([clientFlags, go]));

    let exportInfo: { size: bigint; flags: number } | undefined;
    for (;;) {
      const header = await reader.take(OPTION_REPLY_HEADER_SIZE);
      const type = header.readUInt32BE(12);
      const data = await reader.take(header.readUInt32BE(16));
      if (header.readBigUInt64BE(0) !== NBD_OPT_REPLY_MAGIC || header.readUInt32BE(8) !== Opt.Go) {
        throw new NbdClientError('PROTOCOL_ERROR', 'malformed option reply from the NBD server');
      }
      if ((type & REP_ERR_BIT) !== 0) {
        throw new NbdClientError('REFUSED', `the NBD server refused export ${JSON.stringify(exportName)}: ${repName(type)} ${data.toString('utf8')}`.trim());
      }
      if (type === Rep.Info && data.length >= 2 && data.readUInt16BE(0) === Info.Export) {
        if (data.length !== 12) throw new NbdClientError('PROTOCOL_ERROR', `NBD_INFO_EXPORT of ${data.length} bytes`);
        exportInfo = { size: data.readBigUInt64BE(2), flags: data.readUInt16BE(10) };
      } else if (type === Rep.Ack) {
        break;
      }
    }
    if (exportInfo === undefined) throw new NbdClientError('PROTOCOL_ERROR', 'the NBD server acknowledged GO without NBD_INFO_EXPORT');
    if (reader.leftover !== 0) throw new NbdClientError('PROTOCOL_ERROR', 'the NBD server sent bytes after acknowledging GO');
    reader.detach();
    stopReading(socket);
    return { socket, ...exportInfo };
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

interface StreamHandle {
  fd?: number;
  reading?: boolean;
  readStop?: () => number;
}

/** The libuv handle behind a socket (TCPWrap/PipeWrap: no public API, stable for years). */
function handleOf(socket: net.Socket): StreamHandle | undefined {
  return (socket as unknown as { _handle?: StreamHandle })._handle;
}

/**
 * Stops libuv reading the socket, so whatever the server sends next stays in the kernel's socket
 * buffer for whoever reads it then (the kernel's nbd driver). Node's own pause() only stops
 * emitting data it keeps reading.
 */
function stopReading(socket: net.Socket): void {
  socket.pause();
  const handle = handleOf(socket);
  if (handle?.readStop === undefined) throw new NbdClientError('PROTOCOL_ERROR', 'the socket has no stream handle');
  handle.reading = false;
  handle.readStop();
}

/**
 * The file descriptor of a negotiated socket, for the kernel to take. Node stopped reading it when
 * the handshake ended and has buffered nothing since. The caller destroys the socket once the
 * kernel has it (destroy closes our descriptor only; node-nbd-client hands sockets over the same way).
 */
export function handOver(socket: net.Socket): number {
  const fd = handleOf(socket)?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new NbdClientError('PROTOCOL_ERROR', 'the socket has no file descriptor to hand over');
  if (socket.readableLength !== 0) throw new NbdClientError('PROTOCOL_ERROR', 'the NBD server sent bytes after the handshake');
  return fd;
}

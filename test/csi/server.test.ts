/**
 * The real grpc-js server on a unix socket in a temp dir, called by a real grpc-js client built from
 * the same proto: Identity, socket handling, endpoint checks, UNIMPLEMENTED defaults, shutdown.
 */
import assert from 'node:assert/strict';
import { lstat, rename, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { DRIVER_NAME } from '../../src/constants.js';
import {
  CONTROLLER_CAPABILITIES,
  controllerCapabilitiesResponse,
  GROUP_CONTROLLER_CAPABILITIES,
  groupControllerCapabilitiesResponse,
  NODE_CAPABILITIES,
  nodeCapabilitiesResponse,
} from '../../src/csi/capabilities.js';
import { createIdentityService, ReadinessGate } from '../../src/csi/identity.js';
import { packageVersion } from '../../src/csi/package-root.js';
import { EndpointError, parseUnixEndpoint, SERVICES_BY_MODE, startCsiServer, startSnapshotMetadataServer, type RunningServer } from '../../src/csi/server.js';
import { CALL_OPTIONS, captureLogger, clients, deferred, rawCall, rpc, rpcError, tempDir } from './helpers.js';
import type { GetPluginCapabilitiesResponse__Output } from '../../src/csi/generated/csi/v1/GetPluginCapabilitiesResponse.js';
import type { GetPluginInfoResponse__Output } from '../../src/csi/generated/csi/v1/GetPluginInfoResponse.js';
import type { ProbeResponse__Output } from '../../src/csi/generated/csi/v1/ProbeResponse.js';

describe('CSI gRPC server with Identity only', () => {
  const readiness = new ReadinessGate();
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let server: RunningServer;
  let c: ReturnType<typeof clients>;

  before(async () => {
    tmp = await tempDir();
    const { logger } = captureLogger();
    server = await startCsiServer({
      endpoint: `unix://${join(tmp.dir, 'plugin', 'csi.sock')}`,
      mode: 'controller',
      logger,
      services: { identity: createIdentityService({ readiness }) },
    });
    c = clients(server.socketPath);
  });

  after(async () => {
    c.close();
    await server.stop();
    await tmp.cleanup();
  });

  it('success case - GetPluginInfo returns the driver name and the package version', async () => {
    const info = await rpc<GetPluginInfoResponse__Output>((cb) => c.identity.GetPluginInfo({}, CALL_OPTIONS(), cb));
    assert.equal(info.name, DRIVER_NAME);
    assert.equal(info.name, 'flashcsi.io');
    assert.equal(info.vendor_version, packageVersion());
    assert.match(info.vendor_version, /^\d+\.\d+\.\d+/);
  });

  it('success case - GetPluginCapabilities lists the plugin services and online expansion', async () => {
    const res = await rpc<GetPluginCapabilitiesResponse__Output>((cb) => c.identity.GetPluginCapabilities({}, CALL_OPTIONS(), cb));
    const services = res.capabilities.filter((cap) => cap.type === 'service').map((cap) => cap.service?.type);
    assert.deepEqual(services.sort(), ['CONTROLLER_SERVICE', 'GROUP_CONTROLLER_SERVICE', 'SNAPSHOT_METADATA_SERVICE', 'VOLUME_ACCESSIBILITY_CONSTRAINTS']);
    const expansion = res.capabilities.filter((cap) => cap.type === 'volume_expansion').map((cap) => cap.volume_expansion?.type);
    assert.deepEqual(expansion, ['ONLINE']);
  });

  it('success case - Probe reports not ready until recovery is done, then ready', async () => {
    const before = await rpc<ProbeResponse__Output>((cb) => c.identity.Probe({}, CALL_OPTIONS(), cb));
    assert.equal(before.ready?.value, false);
    readiness.markReady();
    const afterReady = await rpc<ProbeResponse__Output>((cb) => c.identity.Probe({}, CALL_OPTIONS(), cb));
    assert.equal(afterReady.ready?.value, true);
  });

  it('success case - the socket is mode 0600 and a missing parent directory is created 0700', async () => {
    const st = await lstat(server.socketPath);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal((await stat(join(tmp.dir, 'plugin'))).mode & 0o777, 0o700);
  });

  it('failure case - an unknown method answers UNIMPLEMENTED', async () => {
    const err = await rpcError(rawCall(c.raw, '/csi.v1.Bogus/Nope'));
    assert.equal(err.code, status.UNIMPLEMENTED);
  });

  it('failure case - a Controller method answers UNIMPLEMENTED when no controller is implemented', async () => {
    const err = await rpcError(rpc((cb) => c.controller.CreateVolume({ name: 'v' }, CALL_OPTIONS(), cb)));
    assert.equal(err.code, status.UNIMPLEMENTED);
  });

  it('failure case - a Node method answers UNIMPLEMENTED in controller mode', async () => {
    const err = await rpcError(rpc((cb) => c.node.NodeGetInfo({}, CALL_OPTIONS(), cb)));
    assert.equal(err.code, status.UNIMPLEMENTED);
  });

  it('success case - controller mode registers Identity, Controller and GroupController', () => {
    assert.deepEqual([...server.services], ['csi.v1.Identity', 'csi.v1.Controller', 'csi.v1.GroupController']);
  });
});

describe('endpoint parsing', () => {
  const refused: Array<[string, RegExp]> = [
    ['tcp://127.0.0.1:10000', /scheme "tcp" is not supported/],
    ['dns:///localhost:10000', /scheme "dns" is not supported/],
    ['ipv4:127.0.0.1:10000', /scheme "ipv4" is not supported/],
    ['unix-abstract:flashcsi', /scheme "unix-abstract" is not supported/],
    ['localhost:10000', /not supported|unix/],
    ['unix:relative/csi.sock', /absolute path/],
    ['unix://127.0.0.1:10000', /absolute path/],
    ['unix://csi/csi.sock', /absolute path/],
    ['/csi/csi.sock', /absolute path/],
    ['', /absolute path/],
    [`unix:///${'x'.repeat(120)}/csi.sock`, /at most 107/],
  ];
  for (const [endpoint, message] of refused) {
    it(`failure case - ${JSON.stringify(endpoint)} is refused`, () => {
      assert.throws(() => parseUnixEndpoint(endpoint), (err: unknown) => err instanceof EndpointError && message.test(err.message));
    });
  }
  for (const [endpoint, path] of [
    ['unix:///csi/csi.sock', '/csi/csi.sock'],
    ['unix:/csi/csi.sock', '/csi/csi.sock'],
  ] as const) {
    it(`success case - ${endpoint}`, () => assert.equal(parseUnixEndpoint(endpoint), path));
  }

  it('failure case - starting on a TCP endpoint rejects with a clear error and listens nowhere', async () => {
    const { logger } = captureLogger();
    await assert.rejects(
      startCsiServer({ endpoint: 'tcp://127.0.0.1:0', mode: 'all', logger, services: { identity: createIdentityService({ readiness: new ReadinessGate() }) } }),
      (err: unknown) => err instanceof EndpointError && /must be unix:\/\/\//.test(err.message),
    );
  });

  it('success case - the modes register exactly their services', () => {
    assert.deepEqual(SERVICES_BY_MODE.node, ['Identity', 'Node']);
    assert.deepEqual(SERVICES_BY_MODE.controller, ['Identity', 'Controller', 'GroupController']);
    assert.deepEqual(SERVICES_BY_MODE.all, ['Identity', 'Controller', 'GroupController', 'Node']);
  });
});

describe('socket file handling', () => {
  const identity = createIdentityService({ readiness: new ReadinessGate() });

  it('success case - a stale socket is replaced, and stop() removes the socket', async () => {
    const tmp = await tempDir();
    const path = join(tmp.dir, 'csi.sock');
    // Leave a socket file behind that nobody listens on: Node unlinks the path it listened on when
    // the server closes, so listen elsewhere, move the socket onto `path`, then close.
    const stale = createServer();
    const other = join(tmp.dir, 'other.sock');
    await new Promise<void>((resolve) => stale.listen(other, resolve));
    await rename(other, path);
    await new Promise<void>((resolve) => stale.close(() => resolve()));
    assert.ok((await lstat(path)).isSocket());
    const { logger } = captureLogger();
    const server = await startCsiServer({ endpoint: `unix://${path}`, mode: 'node', logger, services: { identity } });
    const c = clients(server.socketPath);
    const info = await rpc<GetPluginInfoResponse__Output>((cb) => c.identity.GetPluginInfo({}, CALL_OPTIONS(), cb));
    assert.equal(info.name, DRIVER_NAME);
    c.close();
    await server.stop();
    await server.stop(); // idempotent
    await assert.rejects(lstat(path), { code: 'ENOENT' });
    await tmp.cleanup();
  });

  it('failure case - a socket another process listens on is not taken over', async () => {
    const tmp = await tempDir();
    const path = join(tmp.dir, 'csi.sock');
    const { logger } = captureLogger();
    const first = await startCsiServer({ endpoint: `unix://${path}`, mode: 'node', logger, services: { identity } });
    await assert.rejects(
      startCsiServer({ endpoint: `unix://${path}`, mode: 'node', logger, services: { identity } }),
      (err: unknown) => err instanceof EndpointError && /in use/.test(err.message),
    );
    assert.ok((await lstat(path)).isSocket(), 'the first server keeps its socket');
    await first.stop();
    await tmp.cleanup();
  });

  it('failure case - a path that is not a socket is not replaced', async () => {
    const tmp = await tempDir();
    const path = join(tmp.dir, 'csi.sock');
    await writeFile(path, 'precious');
    const { logger } = captureLogger();
    await assert.rejects(
      startCsiServer({ endpoint: `unix://${path}`, mode: 'node', logger, services: { identity } }),
      (err: unknown) => err instanceof EndpointError && /not a socket/.test(err.message),
    );
    assert.ok((await lstat(path)).isFile());
    await tmp.cleanup();
  });
});

describe('graceful shutdown', () => {
  it('success case - stop() lets a running call finish', async () => {
    const tmp = await tempDir();
    const entered = deferred();
    const release = deferred();
    const { logger } = captureLogger();
    const server = await startCsiServer({
      endpoint: `unix://${join(tmp.dir, 'csi.sock')}`,
      mode: 'node',
      logger,
      drainTimeoutMs: 30_000,
      services: {
        identity: {
          GetPluginInfo: async () => {
            entered.resolve();
            await release.promise;
            return { name: 'drained', vendor_version: '1' };
          },
        },
      },
    });
    const c = clients(server.socketPath);
    const call = rpc<GetPluginInfoResponse__Output>((cb) => c.identity.GetPluginInfo({}, CALL_OPTIONS(), cb));
    await entered.promise;
    const stopped = server.stop();
    release.resolve();
    assert.equal((await call).name, 'drained');
    await stopped;
    c.close();
    await tmp.cleanup();
  });

  it('success case - stop() cancels calls still running at the drain deadline', async () => {
    const tmp = await tempDir();
    const entered = deferred();
    const aborted = deferred();
    const { logger } = captureLogger();
    const server = await startCsiServer({
      endpoint: `unix://${join(tmp.dir, 'csi.sock')}`,
      mode: 'node',
      logger,
      drainTimeoutMs: 50,
      services: {
        identity: {
          GetPluginInfo: (_req, ctx) =>
            new Promise((_resolve, reject) => {
              ctx.signal.addEventListener('abort', () => {
                aborted.resolve();
                reject(ctx.signal.reason as Error);
              });
              entered.resolve();
            }),
        },
      },
    });
    const c = clients(server.socketPath);
    const call = rpcError(rpc((cb) => c.identity.GetPluginInfo({}, CALL_OPTIONS(), cb)));
    await entered.promise;
    await server.stop();
    const err = await call;
    assert.notEqual(err.code, status.OK);
    await aborted.promise; // the handler saw the cancellation through ctx.signal
    c.close();
    await tmp.cleanup();
  });
});

describe('all mode with capability handlers', () => {
  it('success case - the capability builders serialize and reach the client unchanged', async () => {
    const tmp = await tempDir();
    const { logger } = captureLogger();
    const server = await startCsiServer({
      endpoint: `unix://${join(tmp.dir, 'csi.sock')}`,
      mode: 'all',
      logger,
      services: {
        identity: createIdentityService({ readiness: new ReadinessGate() }),
        controller: { ControllerGetCapabilities: async () => controllerCapabilitiesResponse() },
        node: { NodeGetCapabilities: async () => nodeCapabilitiesResponse() },
        groupController: { GroupControllerGetCapabilities: async () => groupControllerCapabilitiesResponse() },
      },
    });
    assert.deepEqual([...server.services], ['csi.v1.Identity', 'csi.v1.Controller', 'csi.v1.GroupController', 'csi.v1.Node']);
    const c = clients(server.socketPath);
    type Caps = { capabilities: Array<{ rpc?: { type: string } | null }> };
    const types = (res: Caps): string[] => res.capabilities.map((cap) => cap.rpc?.type ?? '?');
    assert.deepEqual(types(await rpc<Caps>((cb) => c.controller.ControllerGetCapabilities({}, CALL_OPTIONS(), cb))), [...CONTROLLER_CAPABILITIES]);
    assert.deepEqual(types(await rpc<Caps>((cb) => c.node.NodeGetCapabilities({}, CALL_OPTIONS(), cb))), [...NODE_CAPABILITIES]);
    assert.deepEqual(types(await rpc<Caps>((cb) => c.groupController.GroupControllerGetCapabilities({}, CALL_OPTIONS(), cb))), [...GROUP_CONTROLLER_CAPABILITIES]);
    assert.deepEqual([...CONTROLLER_CAPABILITIES].sort(), [
      'CLONE_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'CREATE_DELETE_VOLUME', 'EXPAND_VOLUME', 'GET_CAPACITY', 'GET_SNAPSHOT',
      'GET_VOLUME', 'LIST_SNAPSHOTS', 'LIST_VOLUMES', 'SINGLE_NODE_MULTI_WRITER', 'VOLUME_CONDITION',
    ]);
    assert.deepEqual([...NODE_CAPABILITIES].sort(), ['EXPAND_VOLUME', 'GET_VOLUME_STATS', 'SINGLE_NODE_MULTI_WRITER', 'STAGE_UNSTAGE_VOLUME', 'VOLUME_CONDITION']);
    assert.deepEqual([...GROUP_CONTROLLER_CAPABILITIES], ['CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT']);
    // A method the implementation leaves out still answers UNIMPLEMENTED.
    const err = await rpcError(rpc((cb) => c.controller.DeleteVolume({ volume_id: 'v' }, CALL_OPTIONS(), cb)));
    assert.equal(err.code, status.UNIMPLEMENTED);
    c.close();
    await server.stop();
    await tmp.cleanup();
  });
});

describe('SnapshotMetadata server', () => {
  it('success case - serves Identity and SnapshotMetadata on its own socket, streaming with backpressure', async () => {
    const tmp = await tempDir();
    const { logger } = captureLogger();
    const server = await startSnapshotMetadataServer({
      endpoint: `unix://${join(tmp.dir, 'sm.sock')}`,
      logger,
      identity: createIdentityService({ readiness: new ReadinessGate() }),
      snapshotMetadata: {
        GetMetadataAllocated: async function* (req) {
          for (let i = 0; i < 3; i++) {
            yield {
              block_metadata_type: 'FIXED_LENGTH',
              volume_capacity_bytes: '18446744073709551615'.slice(0, 19), // int64 stays a string end to end
              block_metadata: [{ byte_offset: String(BigInt(req.starting_offset) + BigInt(i) * 65536n), size_bytes: '65536' }],
            };
          }
        },
      },
    });
    assert.deepEqual([...server.services], ['csi.v1.Identity', 'csi.v1.SnapshotMetadata']);
    const c = clients(server.socketPath);
    const info = await rpc<GetPluginInfoResponse__Output>((cb) => c.identity.GetPluginInfo({}, CALL_OPTIONS(), cb));
    assert.equal(info.name, DRIVER_NAME);
    const stream = c.snapshotMetadata.GetMetadataAllocated({ snapshot_id: 'vol@cp', starting_offset: '9007199254740993' }, CALL_OPTIONS());
    const offsets: string[] = [];
    for await (const msg of stream) {
      const m = msg as { volume_capacity_bytes: string; block_metadata: Array<{ byte_offset: string }> };
      assert.equal(m.volume_capacity_bytes, '1844674407370955161');
      offsets.push(m.block_metadata[0]?.byte_offset ?? '');
    }
    // 2^53 + 1 survives: no rounding through a JS number.
    assert.deepEqual(offsets, ['9007199254740993', '9007199254806529', '9007199254872065']);
    const err = await rpcError(rpc((cb) => c.controller.ControllerGetCapabilities({}, CALL_OPTIONS(), cb)));
    assert.equal(err.code, status.UNIMPLEMENTED);
    c.close();
    await server.stop();
    await tmp.cleanup();
  });
});

/**
 * `flashcsi plugin --registration-dir`: the kubelet's plugin-registration API, served by the plugin.
 * What the kubelet's plugin watcher does is asked here with a real gRPC client on the real socket:
 * GetInfo's answer (the kubelet's CSI handler checks type, name, endpoint and a 1.x version),
 * NotifyRegistrationStatus, the socket's mode, its absence before the CSI socket listens, removal on
 * SIGTERM (deregistration) and a new socket after a SIGKILL and restart (re-registration). The
 * kubelet itself registering the plugin is shown by test/cluster (a real kubelet).
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, credentials, type ServiceError } from '@grpc/grpc-js';
import { DRIVER_NAME } from '../../src/constants.js';
import { registrationServiceDefinition, type PluginInfo } from '../../src/csi/registration.js';
import { shortTempDir, startPlugin, type PluginProcess } from './plugin-process.js';

function registrationClient(socket: string): { client: Client; call: <T>(method: string, req: unknown) => Promise<T> } {
  const client = new Client(`unix://${socket}`, credentials.createInsecure());
  const def = registrationServiceDefinition();
  const call = <T>(method: string, req: unknown): Promise<T> => {
    const m = def[method];
    if (m === undefined) throw new Error(`no method ${method}`);
    return new Promise((resolve, reject) =>
      client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, req, { deadline: Date.now() + 1000 }, (err: ServiceError | null, res?: unknown) =>
        err ? reject(err) : resolve(res as T),
      ),
    );
  };
  return { client, call };
}

describe('plugin registration with the kubelet', () => {
  let dir: string;
  let registry: string;
  let socket: string;
  let plugin: PluginProcess | undefined;
  const start = async (): Promise<PluginProcess> =>
    startPlugin(dir, { extraArgs: ['--registration-dir', registry, '--kubelet-registration-path', '/var/lib/kubelet/plugins/flashcsi.io/csi.sock'] });

  before(async () => {
    dir = await shortTempDir();
    registry = join(dir, 'plugins_registry');
    socket = join(registry, `${DRIVER_NAME}-reg.sock`);
  });
  after(async () => {
    if (plugin) await plugin.kill();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves GetInfo as the kubelet expects, on a 0600 socket made after the CSI socket listens', async () => {
    plugin = await start();
    await plugin.waitReady();
    assert.ok(existsSync(socket), `registration socket at ${socket}; log:\n${readFileSync(plugin.logFile, 'utf8').slice(-2000)}`);
    const st = lstatSync(socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.ok(lstatSync(plugin.socket).ctimeMs <= st.ctimeMs, 'the CSI socket exists before the registration socket');
    const { client, call } = registrationClient(socket);
    try {
      const info = await call<PluginInfo>('GetInfo', {});
      assert.deepEqual(
        { type: info.type, name: info.name, endpoint: info.endpoint, versions: info.supported_versions },
        { type: 'CSIPlugin', name: DRIVER_NAME, endpoint: '/var/lib/kubelet/plugins/flashcsi.io/csi.sock', versions: ['1.0.0'] },
      );
      assert.deepEqual(await call('NotifyRegistrationStatus', { plugin_registered: true, error: '' }), {});
    } finally {
      client.close();
    }
    assert.match(readFileSync(plugin.logFile, 'utf8'), /registered with the kubelet/);
  });

  it('logs a refusal with the kubelet\'s reason', async () => {
    const { client, call } = registrationClient(socket);
    try {
      await call('NotifyRegistrationStatus', { plugin_registered: false, error: 'RegisterPlugin error -- no handler registered for plugin type: CSIPlugin' });
    } finally {
      client.close();
    }
    const log = readFileSync(plugin?.logFile ?? '', 'utf8');
    assert.match(log, /"reason":"RegisterPlugin error -- no handler registered[^"]*","msg":"the kubelet refused the registration"/);
    assert.match(log, /offering the registration socket again after a back-off/);
  });

  it('makes a new socket after a SIGKILL and restart (re-registration); removes it on SIGTERM (deregistration)', async () => {
    const before = lstatSync(socket).ctimeMs;
    await plugin?.kill();
    assert.ok(existsSync(socket), 'a killed plugin leaves its socket behind');
    plugin = await start();
    await plugin.waitReady();
    assert.ok(lstatSync(socket).ctimeMs > before, 'the restarted plugin made a new socket, which the kubelet sees as a new plugin');
    const { client, call } = registrationClient(socket);
    try {
      assert.equal((await call<PluginInfo>('GetInfo', {})).name, DRIVER_NAME);
    } finally {
      client.close();
    }
    assert.equal(await plugin.stop(), 0);
    plugin = undefined;
    assert.deepEqual(readdirSync(registry), [], 'SIGTERM removed the registration socket');
  });
});

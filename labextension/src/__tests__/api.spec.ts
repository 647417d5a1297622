/**
 * requestAPI and GatewayAPI over a fake transport: URLs, bodies, and the typed
 * errors the panel turns into messages.
 */

import { GatewayAPI, GatewayAPIError, requestAPI } from '../api';
import { FakeRelay, cluster } from './fakeRelay';

async function failure(call: Promise<unknown>): Promise<GatewayAPIError> {
  try {
    await call;
  } catch (error) {
    return error as GatewayAPIError;
  }
  throw new Error('the call succeeded');
}

describe('requestAPI', () => {
  let relay: FakeRelay;
  beforeEach(() => {
    relay = new FakeRelay();
  });

  it('calls the relay under the base URL and decodes JSON', async () => {
    relay.clusters = [cluster('a')];
    const data = await requestAPI<any>('clusters', {}, relay.settings());
    expect(data.clusters[0].name).toBe('a');
    expect(relay.paths()).toEqual(['GET clusters']);
  });

  it('returns undefined for 204', async () => {
    relay.clusters = [cluster('a')];
    const data = await requestAPI(
      'clusters/a',
      { method: 'DELETE' },
      relay.settings()
    );
    expect(data).toBeUndefined();
  });

  it('raises the relay message as a server error', async () => {
    relay.failure = {
      status: 502,
      body: { error: 'Cannot reach the Dask Gateway at x' }
    };
    await expect(
      requestAPI('clusters', {}, relay.settings())
    ).rejects.toMatchObject({
      kind: 'server',
      status: 502,
      message: 'Cannot reach the Dask Gateway at x'
    });
  });

  it('tells a missing server extension from a missing cluster', async () => {
    relay.missing = true;
    const error = await failure(requestAPI('clusters', {}, relay.settings()));
    expect(error).toBeInstanceOf(GatewayAPIError);
    expect(error.kind).toBe('not-installed');

    relay.missing = false;
    const notFound = await failure(
      requestAPI('clusters/nope', {}, relay.settings())
    );
    expect(notFound.kind).toBe('server');
    expect(notFound.message).toBe('Cluster nope not found');
  });

  it('reports a dead server as a network error', async () => {
    relay.down = true;
    await expect(
      requestAPI('clusters', {}, relay.settings())
    ).rejects.toMatchObject({
      kind: 'network',
      status: 0
    });
  });
});

describe('GatewayAPI', () => {
  it('sends what the relay expects', async () => {
    const relay = new FakeRelay();
    relay.clusters = [cluster('a b')];
    relay.config.admin = true;
    const api = new GatewayAPI(relay.settings());
    expect(await api.createCluster({ worker_cores: 2 })).toBe('new2');
    await api.scale('a b', 3);
    await api.adapt('a b', 1, 4);
    await api.stop('a b');
    await api.listClusters(true);
    expect(relay.calls).toEqual([
      {
        method: 'POST',
        path: 'clusters',
        body: { cluster_options: { worker_cores: 2 } }
      },
      { method: 'POST', path: 'clusters/a%20b/scale', body: { count: 3 } },
      {
        method: 'POST',
        path: 'clusters/a%20b/adapt',
        body: { minimum: 1, maximum: 4, active: true }
      },
      { method: 'DELETE', path: 'clusters/a%20b', body: undefined },
      { method: 'GET', path: 'clusters?all=1', body: undefined }
    ]);
  });

  it('lists by status, and reads events and logs', async () => {
    const relay = new FakeRelay();
    const name = '0123456789abcdef0123456789abcdef';
    relay.clusters = [
      cluster(name),
      cluster('f', { status: 'FAILED', reason: 'boom' })
    ];
    relay.events[name] = [
      { time: 1, kind: 'created', message: 'Created', worker: null }
    ];
    relay.logs[name] = { scheduler: 'a\nb\nc', w1: 'hello' };
    const api = new GatewayAPI(relay.settings());
    const failed = await api.listClusters(false, ['FAILED']);
    expect(failed.map(c => c.name)).toEqual(['f']);
    expect(await api.events(name)).toEqual(relay.events[name]);
    expect(await api.logs(name, 'scheduler', 2)).toEqual({
      process: 'scheduler',
      text: 'b\nc',
      processes: ['scheduler', 'w1']
    });
    expect((await api.logs(name, 'w1')).text).toBe('hello');
    const missing = await failure(api.logs(name, 'nope'));
    expect(missing.status).toBe(404);
    expect(relay.paths()).toEqual([
      'GET clusters?status=FAILED',
      `GET clusters/${name}/events`,
      `GET clusters/${name}/logs?process=scheduler&tail=2`,
      `GET clusters/${name}/logs?process=w1&tail=100`,
      `GET clusters/${name}/logs?process=nope&tail=100`
    ]);
  });
});

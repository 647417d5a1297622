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
});

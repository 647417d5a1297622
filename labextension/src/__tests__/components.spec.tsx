/**
 * The React components over a real model and a fake transport: the options form
 * (all six option types, validation messages, submit, gateway errors), cluster
 * cards (stats, actions as commands, scale/adapt controls) and the panel's
 * loading, empty and error states.
 */

import * as React from 'react';
import {
  act,
  fireEvent,
  render,
  screen,
  waitFor
} from '@testing-library/react';
import { CommandRegistry } from '@lumino/commands';
import { nullTranslator } from '@jupyterlab/translation';

import { GatewayAPI } from '../api';
import { ClusterCard } from '../components/cluster';
import { NewClusterForm } from '../components/form';
import { validateOption } from '../components/options';
import { GatewayPanel } from '../components/panel';
import { connectionCode, formatAge, formatBytes } from '../format';
import { GatewayModel } from '../model';
import { CommandIDs } from '../tokens';
import { FakeRelay, OPTIONS, cluster } from './fakeRelay';

const trans = nullTranslator.load('jupyterhub_dask_gateway');

function setup(relay: FakeRelay) {
  const model = new GatewayModel({
    api: new GatewayAPI(relay.settings()),
    refreshInterval: 3600,
    autoStart: false
  });
  model.visible = true;
  const commands = new CommandRegistry();
  const executed: [string, any][] = [];
  for (const id of Object.values(CommandIDs)) {
    commands.addCommand(id, {
      execute: args => {
        executed.push([id, args]);
        if (id === CommandIDs.createCluster) {
          return model.create(args.options as any);
        }
      }
    });
  }
  return { model, commands, executed };
}

describe('validateOption', () => {
  const [cores, memory, image, gpu, size, env] = OPTIONS;
  it('checks whole numbers and bounds', () => {
    expect(validateOption(cores, '2', trans)).toEqual({ value: 2 });
    expect(validateOption(cores, '2.5', trans).error).toBe(
      'Enter a whole number'
    );
    expect(validateOption(cores, '0', trans).error).toBe('Must be at least 1');
    expect(validateOption(cores, '5', trans).error).toBe('Must be at most 4');
  });
  it('checks numbers', () => {
    expect(validateOption(memory, '1.5', trans)).toEqual({ value: 1.5 });
    expect(validateOption(memory, 'lots', trans).error).toBe('Enter a number');
    expect(validateOption(memory, '', trans).error).toBe('Enter a number');
    expect(validateOption(memory, '0.1', trans).error).toBe(
      'Must be at least 0.5'
    );
  });
  it('passes strings and booleans through', () => {
    expect(validateOption(image, 'x:1', trans)).toEqual({ value: 'x:1' });
    expect(validateOption(gpu, true, trans)).toEqual({ value: true });
  });
  it('restricts selects to their options', () => {
    expect(validateOption(size, 'large', trans)).toEqual({ value: 'large' });
    expect(validateOption(size, 'huge', trans).error).toBe(
      'Choose one of the listed values'
    );
  });
  it('wants a JSON object for mappings', () => {
    expect(validateOption(env, '{"A": "2"}', trans)).toEqual({
      value: { A: '2' }
    });
    expect(validateOption(env, '', trans)).toEqual({ value: {} });
    for (const bad of ['[1]', '"x"', '{', 'null']) {
      expect(validateOption(env, bad, trans).error).toMatch(/JSON object/);
    }
  });
});

describe('NewClusterForm', () => {
  it('draws every option type from the spec, validates and submits', async () => {
    const relay = new FakeRelay();
    const { model, commands } = setup(relay);
    const onClose = jest.fn();
    render(
      <NewClusterForm
        model={model}
        commands={commands}
        trans={trans}
        onClose={onClose}
      />
    );

    const coresInput = (await screen.findByLabelText(
      'Worker cores'
    )) as HTMLInputElement;
    expect(coresInput.value).toBe('1');
    expect(screen.getByText('From 1 to 4')).toBeTruthy();
    expect((screen.getByLabelText('GPU') as HTMLInputElement).type).toBe(
      'checkbox'
    );
    expect((screen.getByLabelText('Size') as HTMLSelectElement).tagName).toBe(
      'SELECT'
    );
    expect(
      (screen.getByLabelText('Environment') as HTMLTextAreaElement).tagName
    ).toBe('TEXTAREA');

    fireEvent.change(coresInput, { target: { value: '9' } });
    expect(screen.getByRole('alert').textContent).toBe('Must be at most 4');
    fireEvent.change(screen.getByLabelText('Environment'), {
      target: { value: '[1]' }
    });
    fireEvent.click(screen.getByText('Create'));
    expect(relay.paths()).not.toContain('POST clusters');

    fireEvent.change(coresInput, { target: { value: '2' } });
    fireEvent.change(screen.getByLabelText('Environment'), {
      target: { value: '{"B": "x"}' }
    });
    fireEvent.click(screen.getByLabelText('GPU'));
    fireEvent.change(screen.getByLabelText('Size'), {
      target: { value: 'large' }
    });
    expect(screen.queryByRole('alert')).toBeNull();
    fireEvent.click(screen.getByText('Create'));

    await waitFor(() => expect(onClose).toHaveBeenCalled());
    const post = relay.calls.find(c => c.method === 'POST');
    expect(post?.body).toEqual({
      cluster_options: {
        worker_cores: 2,
        worker_memory: 2,
        image: 'daskgateway/dask',
        gpu: true,
        size: 'large',
        environment: { B: 'x' }
      }
    });
    model.dispose();
  });

  it("shows the gateway's own error", async () => {
    const relay = new FakeRelay();
    relay.options = [];
    const { model, commands } = setup(relay);
    render(
      <NewClusterForm
        model={model}
        commands={commands}
        trans={trans}
        onClose={jest.fn()}
      />
    );
    await screen.findByText(/offers no options/);
    relay.failure = { status: 422, body: { error: 'cluster limit reached' } };
    fireEvent.click(screen.getByText('Create'));
    expect((await screen.findByRole('alert')).textContent).toBe(
      'cluster limit reached'
    );
    model.dispose();
  });

  it('says when the options cannot be loaded', async () => {
    const relay = new FakeRelay();
    relay.failure = { status: 403, body: { error: 'not allowed' } };
    const { model, commands } = setup(relay);
    render(
      <NewClusterForm
        model={model}
        commands={commands}
        trans={trans}
        onClose={jest.fn()}
      />
    );
    expect((await screen.findByRole('alert')).textContent).toBe(
      'Cannot load the cluster options: not allowed'
    );
    model.dispose();
  });
});

describe('ClusterCard', () => {
  function renderCard(extra = {}, user = 'alice') {
    const relay = new FakeRelay();
    const { model, commands, executed } = setup(relay);
    const onSelect = jest.fn();
    const info = cluster('0123456789abcdef0123456789abcdef', extra);
    render(
      <ul>
        <ClusterCard
          cluster={info}
          selected={false}
          user={user}
          commands={commands}
          trans={trans}
          daskLab={true}
          onSelect={onSelect}
        />
      </ul>
    );
    return { model, executed, onSelect, name: info.name };
  }

  it('shows status and sizes, and runs commands with its name', () => {
    const { executed, onSelect, name, model } = renderCard();
    expect(screen.getByText('Running')).toBeTruthy();
    expect(screen.getByText('0123456789ab…')).toBeTruthy();
    expect(screen.getByText('2.0 GiB')).toBeTruthy();
    expect(screen.getByText('2 min')).toBeTruthy();
    for (const label of [
      'Dashboard',
      'Lab panes',
      'Insert code',
      'Logs',
      'Stop'
    ]) {
      fireEvent.click(screen.getByText(label));
    }
    expect(executed).toEqual([
      [CommandIDs.openDashboard, { name }],
      [CommandIDs.showInDaskLab, { name }],
      [CommandIDs.insertCode, { name }],
      [CommandIDs.showLogs, { name }],
      [CommandIDs.stop, { name }]
    ]);
    expect(onSelect).not.toHaveBeenCalled();
    fireEvent.click(screen.getByLabelText(`Cluster ${name}`));
    expect(onSelect).toHaveBeenCalledWith(name);
    model.dispose();
  });

  it('scales and adapts with validated numbers', () => {
    const { executed, name, model } = renderCard();
    fireEvent.click(screen.getByText('Scale…'));
    fireEvent.change(screen.getByLabelText('Number of workers'), {
      target: { value: '3' }
    });
    const group = screen.getByRole('group');
    fireEvent.click(group.querySelectorAll('button')[0]);
    expect(executed).toEqual([[CommandIDs.scale, { name, count: 3 }]]);

    fireEvent.change(screen.getByLabelText('Minimum workers'), {
      target: { value: '5' }
    });
    fireEvent.change(screen.getByLabelText('Maximum workers'), {
      target: { value: '2' }
    });
    expect(screen.getByRole('alert').textContent).toBe(
      'The minimum must not exceed the maximum'
    );
    expect((screen.getByText('Adapt') as HTMLButtonElement).disabled).toBe(
      true
    );
    fireEvent.change(screen.getByLabelText('Minimum workers'), {
      target: { value: '1' }
    });
    fireEvent.click(screen.getByText('Adapt'));
    expect(executed[1]).toEqual([
      CommandIDs.adapt,
      { name, minimum: 1, maximum: 2 }
    ]);
    model.dispose();
  });

  it('explains failures and marks other owners', () => {
    const { model } = renderCard(
      {
        status: 'FAILED',
        reason: 'Scheduler did not start in 60 s',
        owner: 'bob',
        dashboard_url: null
      },
      'admin'
    );
    expect(screen.getByText('Failed')).toBeTruthy();
    // the reason is text on the card, not a tooltip
    const reason = screen.getByText('Scheduler did not start in 60 s');
    expect(reason.closest('.jp-DaskGateway-reason')?.textContent).toBe(
      'Failed: Scheduler did not start in 60 s'
    );
    expect(screen.getByText('Owner: bob')).toBeTruthy();
    expect((screen.getByText('Dashboard') as HTMLButtonElement).disabled).toBe(
      true
    );
    expect((screen.getByText('Stop') as HTMLButtonElement).disabled).toBe(true);
    // a failed cluster's logs say why
    expect((screen.getByText('Logs') as HTMLButtonElement).disabled).toBe(
      false
    );
    model.dispose();
  });

  it('says why the gateway stopped a cluster, with no actions left but Logs', () => {
    const reason =
      'because the last server of its owner bob stopped (culled, or stopped by ' +
      'the user or an admin) more than 300 s ago';
    const { model, executed, name } = renderCard(
      {
        status: 'STOPPED',
        reason,
        owner: 'bob',
        workers: 0,
        dashboard_url: '/services/dask-gateway/clusters/x/status'
      },
      'admin'
    );
    expect(screen.getByText('Stopped')).toBeTruthy();
    const text = screen.getByText(reason);
    const box = text.closest('.jp-DaskGateway-reason');
    expect(box?.textContent).toBe(`Stopped: ${reason}`);
    expect(box?.classList.contains('jp-mod-stopped')).toBe(true);
    expect(box?.classList.contains('jp-mod-failed')).toBe(false);
    for (const label of [
      'Dashboard',
      'Lab panes',
      'Insert code',
      'Scale…',
      'Stop'
    ]) {
      expect((screen.getByText(label) as HTMLButtonElement).disabled).toBe(
        true
      );
    }
    // the scale/adapt controls cannot open
    fireEvent.click(screen.getByText('Scale…'));
    expect(screen.queryByText('Adapt')).toBeNull();
    const logs = screen.getByText('Logs') as HTMLButtonElement;
    expect(logs.disabled).toBe(false);
    fireEvent.click(logs);
    expect(executed).toEqual([[CommandIDs.showLogs, { name }]]);
    model.dispose();
  });

  it("shows no owner line on the user's own cluster", () => {
    const { model } = renderCard();
    expect(screen.queryByText('Owner: alice')).toBeNull();
    model.dispose();
  });
});

describe('GatewayPanel', () => {
  function renderPanel(relay: FakeRelay) {
    const { model, commands, executed } = setup(relay);
    render(
      <GatewayPanel
        model={model}
        commands={commands}
        trans={trans}
        formOpen={false}
        onCloseForm={jest.fn()}
        daskLab={false}
      />
    );
    return { model, executed };
  }

  it('goes from loading to the list', async () => {
    const relay = new FakeRelay();
    relay.clusters = [cluster('a'), cluster('b')];
    const { model } = renderPanel(relay);
    expect(screen.getByText('Loading clusters…')).toBeTruthy();
    await act(() => model.refresh());
    await screen.findByText('a');
    expect(screen.getAllByRole('listitem')).toHaveLength(2);
    expect(screen.queryByText('Lab panes')).toBeNull();
    model.dispose();
  });

  it('shows the empty state with a way to create', async () => {
    const { model, executed } = renderPanel(new FakeRelay());
    await act(() => model.refresh());
    fireEvent.click(await screen.findByText('New cluster'));
    expect(executed).toEqual([[CommandIDs.newCluster, {}]]);
    model.dispose();
  });

  it('shows errors from the relay and retries', async () => {
    const relay = new FakeRelay();
    relay.failure = {
      status: 502,
      body: { error: 'Cannot reach the Dask Gateway at http://gw' }
    };
    const { model, executed } = renderPanel(relay);
    await act(() => model.refresh());
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toContain('Cannot list your Dask clusters.');
    expect(alert.textContent).toContain(
      'Cannot reach the Dask Gateway at http://gw'
    );
    fireEvent.click(screen.getByText('Retry'));
    expect(executed).toEqual([[CommandIDs.refresh, {}]]);
    model.dispose();
  });

  it('gives admins an All users view with owners and a filter', async () => {
    const relay = new FakeRelay();
    relay.config.admin = true;
    relay.clusters = [
      cluster('a1', { owner: 'alice' }),
      cluster('b1', { owner: 'bob' }),
      cluster('b2', {
        owner: 'bob',
        status: 'FAILED',
        reason: 'boom',
        stop_time: Date.now()
      })
    ];
    const { model, commands, executed } = setup(relay);
    // the real command's effect, as commands.ts implements it
    commands.commandExecuted.connect((_, { id, args }) => {
      if (id === CommandIDs.toggleAllUsers) {
        model.showAll = args.value as boolean;
      }
    });
    render(
      <GatewayPanel
        model={model}
        commands={commands}
        trans={trans}
        formOpen={false}
        onCloseForm={jest.fn()}
        daskLab={false}
      />
    );
    await act(() => model.refresh());
    const toggle = screen.getByRole('switch', { name: 'All users' });
    expect((toggle as HTMLInputElement).checked).toBe(false);
    expect(screen.getAllByRole('listitem')).toHaveLength(1);
    expect(screen.queryByLabelText('Filter by user')).toBeNull();

    fireEvent.click(toggle);
    expect(executed).toEqual([[CommandIDs.toggleAllUsers, { value: true }]]);
    await act(() => model.refresh());
    await screen.findByText('b1');
    expect(screen.getAllByRole('listitem')).toHaveLength(3);
    // every card says whose it is, the admin's own included
    expect(screen.getAllByText('Owner: bob')).toHaveLength(2);
    expect(screen.getByText('Owner: alice')).toBeTruthy();
    expect(screen.getByText('boom')).toBeTruthy();

    const filter = screen.getByLabelText('Filter by user') as HTMLSelectElement;
    expect([...filter.options].map(o => o.textContent)).toEqual([
      'Everyone',
      'alice',
      'bob'
    ]);
    fireEvent.change(filter, { target: { value: 'alice' } });
    expect(screen.getAllByRole('listitem')).toHaveLength(1);
    expect(screen.getByText('a1')).toBeTruthy();
    // an admin may stop anyone's cluster
    fireEvent.click(screen.getByText('Stop'));
    expect(executed[1]).toEqual([CommandIDs.stop, { name: 'a1' }]);
    model.dispose();
  });

  it('never shows the All users switch to other users', async () => {
    const relay = new FakeRelay();
    relay.clusters = [cluster('a1')];
    const { model } = renderPanel(relay);
    await act(() => model.refresh());
    await screen.findByText('a1');
    expect(screen.queryByRole('switch')).toBeNull();
    expect(screen.queryByText('All users')).toBeNull();
    model.dispose();
  });

  it('explains a missing server extension', async () => {
    const relay = new FakeRelay();
    relay.missing = true;
    const { model } = renderPanel(relay);
    await act(() => model.refresh());
    expect((await screen.findByRole('alert')).textContent).toContain(
      'server extension is not enabled'
    );
    model.dispose();
  });
});

describe('format', () => {
  it('formats sizes, ages and the connection code', () => {
    expect(formatBytes(null)).toBe('–');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536 * 2 ** 20)).toBe('1.5 GiB');
    expect(formatAge(5, trans)).toBe('5 s');
    expect(formatAge(7300, trans)).toBe('2 h 1 min');
    expect(formatAge(3 * 86400 + 3600, trans)).toBe('3 d 1 h');
    expect(connectionCode('abc')).toBe(
      'from dask_gateway import Gateway\n\ngateway = Gateway()\n' +
        'cluster = gateway.connect("abc")\nclient = cluster.get_client()\nclient'
    );
  });
});

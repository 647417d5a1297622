/**
 * The sidebar's body: the loading, error, not-configured and empty states, an
 * admin's "All users" switch and owner filter, the new-cluster form when open, and
 * the list of cluster cards. It re-renders on the model's `changed` signal and
 * reads everything from the model.
 */

import * as React from 'react';
import { CommandRegistry } from '@lumino/commands';
import { TranslationBundle } from '@jupyterlab/translation';

import { GatewayAPIError } from '../api';
import { GatewayModel } from '../model';
import { CommandIDs } from '../tokens';
import { ClusterCard } from './cluster';
import { NewClusterForm } from './form';

export interface IGatewayPanelProps {
  model: GatewayModel;
  commands: CommandRegistry;
  trans: TranslationBundle;
  formOpen: boolean;
  onCloseForm: () => void;
  daskLab: boolean;
}

/** A user-facing explanation of a failed refresh. */
export function errorMessage(
  error: GatewayAPIError,
  trans: TranslationBundle
): string {
  switch (error.kind) {
    case 'network':
      return trans.__('Cannot reach the Jupyter server. Is it still running?');
    case 'not-installed':
      return trans.__(
        'The jupyterhub-dask-gateway server extension is not enabled on this Jupyter server. Check `jupyter server extension list`.'
      );
    default:
      return error.message;
  }
}

export function GatewayPanel(props: IGatewayPanelProps): JSX.Element {
  const { model, commands, trans, formOpen, onCloseForm, daskLab } = props;
  const [, setVersion] = React.useState(0);
  React.useEffect(() => {
    const onChange = () => setVersion(v => v + 1);
    model.changed.connect(onChange);
    return () => {
      model.changed.disconnect(onChange);
    };
  }, [model]);

  const { state, error } = model;
  const clusters = model.shownClusters;
  const user = model.config?.user ?? null;
  const allUsers = model.allUsers;
  const notConfigured = model.config !== null && !model.config.configured;

  let content: JSX.Element;
  if (state === 'loading') {
    content = (
      <div className="jp-DaskGateway-state" aria-busy="true">
        {trans.__('Loading clusters…')}
      </div>
    );
  } else if (clusters.length === 0 && state === 'ready' && allUsers) {
    content = (
      <div className="jp-DaskGateway-state">
        <p>
          {model.ownerFilter
            ? trans.__('%1 has no clusters.', model.ownerFilter)
            : trans.__('No user has a cluster.')}
        </p>
      </div>
    );
  } else if (clusters.length === 0 && state === 'ready') {
    content = (
      <div className="jp-DaskGateway-state">
        <p>{trans.__('No clusters yet.')}</p>
        {!formOpen && (
          <button
            className="jp-DaskGateway-button jp-mod-accept"
            onClick={() => void commands.execute(CommandIDs.newCluster)}
          >
            {trans.__('New cluster')}
          </button>
        )}
      </div>
    );
  } else {
    content = (
      <ul
        className="jp-DaskGateway-list"
        aria-label={
          allUsers ? trans.__("Every user's clusters") : trans.__('Clusters')
        }
      >
        {clusters.map(cluster => (
          <ClusterCard
            key={cluster.name}
            cluster={cluster}
            selected={model.selected === cluster.name}
            pending={model.pending(cluster.name)}
            user={user}
            showOwner={allUsers}
            commands={commands}
            trans={trans}
            daskLab={daskLab}
            onSelect={name => (model.selected = name)}
          />
        ))}
      </ul>
    );
  }

  return (
    <div className="jp-DaskGateway-body">
      {state === 'error' && error && (
        <div className="jp-DaskGateway-error" role="alert">
          <div>
            {notConfigured
              ? trans.__('Dask Gateway is not set up for this server.')
              : trans.__('Cannot list your Dask clusters.')}
          </div>
          <div>{errorMessage(error, trans)}</div>
          <button
            className="jp-DaskGateway-button"
            onClick={() => void commands.execute(CommandIDs.refresh)}
          >
            {trans.__('Retry')}
          </button>
        </div>
      )}
      {model.isAdmin && (
        <AdminControls model={model} commands={commands} trans={trans} />
      )}
      {formOpen && !notConfigured && (
        <NewClusterForm
          model={model}
          commands={commands}
          trans={trans}
          onClose={onCloseForm}
        />
      )}
      {!(state === 'error' && clusters.length === 0) && content}
    </div>
  );
}

export interface IAdminControlsProps {
  model: GatewayModel;
  commands: CommandRegistry;
  trans: TranslationBundle;
}

/**
 * Admins only: the "All users" switch (the toggle-all-users command) and, while it
 * is on, the filter by owner.
 */
export function AdminControls(props: IAdminControlsProps): JSX.Element {
  const { model, commands, trans } = props;
  const owners = model.owners;
  const filter = model.ownerFilter;
  return (
    <div
      className="jp-DaskGateway-admin"
      role="group"
      aria-label={trans.__('Admin view')}
    >
      <label className="jp-DaskGateway-switch">
        <input
          type="checkbox"
          role="switch"
          checked={model.allUsers}
          onChange={e =>
            void commands.execute(CommandIDs.toggleAllUsers, {
              value: e.currentTarget.checked
            })
          }
        />
        <span>{trans.__('All users')}</span>
      </label>
      {model.allUsers && (
        <label className="jp-DaskGateway-owner-filter">
          <span>{trans.__('User')}</span>
          <select
            aria-label={trans.__('Filter by user')}
            value={filter ?? ''}
            onChange={e => (model.ownerFilter = e.currentTarget.value || null)}
          >
            <option value="">{trans.__('Everyone')}</option>
            {/* a chosen owner whose clusters are all gone stays choosable */}
            {[...new Set([...owners, ...(filter ? [filter] : [])])]
              .sort()
              .map(owner => (
                <option key={owner} value={owner}>
                  {owner}
                </option>
              ))}
          </select>
        </label>
      )}
    </div>
  );
}

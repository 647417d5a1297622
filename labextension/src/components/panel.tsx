/**
 * The sidebar's body: the loading, error, not-configured and empty states, the
 * new-cluster form when open, and the list of cluster cards. It re-renders on the
 * model's `changed` signal and reads everything from the model.
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

  const { state, error, clusters } = model;
  const user = model.config?.user ?? null;
  const notConfigured = model.config !== null && !model.config.configured;

  let content: JSX.Element;
  if (state === 'loading') {
    content = (
      <div className="jp-DaskGateway-state" aria-busy="true">
        {trans.__('Loading clusters…')}
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
      <ul className="jp-DaskGateway-list" aria-label={trans.__('Clusters')}>
        {clusters.map(cluster => (
          <ClusterCard
            key={cluster.name}
            cluster={cluster}
            selected={model.selected === cluster.name}
            pending={model.pending(cluster.name)}
            user={user}
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

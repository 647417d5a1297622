/**
 * The new-cluster form: loads the admin's options spec through the model, keeps
 * what the user typed, validates it field by field, and submits through the
 * create command so the palette and the form share one code path. Errors from
 * the gateway (e.g. a limit the spec does not express) are shown above the button.
 */

import * as React from 'react';
import { CommandRegistry } from '@lumino/commands';
import { TranslationBundle } from '@jupyterlab/translation';

import { GatewayModel } from '../model';
import { CommandIDs, IOptionField } from '../tokens';
import {
  initialRaw,
  IValidated,
  OptionInput,
  RawValue,
  validateOption
} from './options';

export interface INewClusterFormProps {
  model: GatewayModel;
  commands: CommandRegistry;
  trans: TranslationBundle;
  onClose: () => void;
}

export function NewClusterForm(props: INewClusterFormProps): JSX.Element {
  const { model, commands, trans, onClose } = props;
  const [fields, setFields] = React.useState<IOptionField[] | null>(
    model.options
  );
  const [loadError, setLoadError] = React.useState<string | null>(null);
  // only edited fields are kept here; the others show their default
  const [raw, setRaw] = React.useState<Record<string, RawValue>>({});
  const [touched, setTouched] = React.useState(false);
  const [submitting, setSubmitting] = React.useState(false);
  const [submitError, setSubmitError] = React.useState<string | null>(null);

  React.useEffect(() => {
    let active = true;
    void model.loadOptions(true).then(loaded => {
      if (!active) {
        return;
      }
      if (loaded) {
        setFields(loaded);
        setLoadError(null);
      } else {
        setLoadError(model.optionsError?.message ?? trans.__('Unknown error'));
      }
    });
    return () => {
      active = false;
    };
  }, [model]);

  const results: Record<string, IValidated> = {};
  for (const field of fields ?? []) {
    results[field.field] = validateOption(
      field,
      raw[field.field] ?? initialRaw(field),
      trans
    );
  }
  const invalid = Object.values(results).some(r => r.error !== undefined);

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    setTouched(true);
    if (invalid || !fields) {
      return;
    }
    const options: Record<string, unknown> = {};
    for (const field of fields) {
      options[field.field] = results[field.field].value;
    }
    setSubmitting(true);
    setSubmitError(null);
    try {
      await commands.execute(CommandIDs.createCluster, {
        options: options as any,
        notify: false
      });
      onClose();
    } catch (error) {
      setSubmitError((error as Error).message ?? String(error));
    } finally {
      setSubmitting(false);
    }
  };

  let body: JSX.Element;
  if (loadError) {
    body = (
      <div className="jp-DaskGateway-error" role="alert">
        {trans.__('Cannot load the cluster options: %1', loadError)}
      </div>
    );
  } else if (!fields) {
    body = (
      <div className="jp-DaskGateway-hint">
        {trans.__('Loading cluster options…')}
      </div>
    );
  } else if (fields.length === 0) {
    body = (
      <div className="jp-DaskGateway-hint">
        {trans.__(
          'Your administrator offers no options: the cluster gets the default settings.'
        )}
      </div>
    );
  } else {
    body = (
      <>
        {fields.map(field => (
          <OptionInput
            key={field.field}
            field={field}
            raw={raw[field.field] ?? initialRaw(field)}
            // a field shows its problem once edited, or after a submit attempt
            error={
              touched || field.field in raw
                ? results[field.field].error
                : undefined
            }
            disabled={submitting}
            onChange={value => setRaw({ ...raw, [field.field]: value })}
            trans={trans}
          />
        ))}
      </>
    );
  }

  return (
    <form
      className="jp-DaskGateway-form"
      aria-label={trans.__('New cluster')}
      onSubmit={submit}
    >
      <div className="jp-DaskGateway-section-title">
        {trans.__('New cluster')}
      </div>
      {body}
      {submitError && (
        <div className="jp-DaskGateway-error" role="alert">
          {submitError}
        </div>
      )}
      <div className="jp-DaskGateway-actions">
        <button
          type="submit"
          className="jp-DaskGateway-button jp-mod-accept"
          disabled={
            submitting || !!loadError || !fields || (touched && invalid)
          }
        >
          {submitting ? trans.__('Creating…') : trans.__('Create')}
        </button>
        <button
          type="button"
          className="jp-DaskGateway-button"
          onClick={onClose}
          disabled={submitting}
        >
          {trans.__('Cancel')}
        </button>
      </div>
    </form>
  );
}

/**
 * One input per cluster option, drawn from the gateway's options spec (int,
 * float, string, bool, select, mapping), and the validation that turns what the
 * user typed into the value the gateway expects — or a message saying why not.
 * The gateway validates again; its message is shown by the form.
 */

import * as React from 'react';
import { TranslationBundle } from '@jupyterlab/translation';

import { IOptionField } from '../tokens';

/** What an input holds: text for numbers and mappings (so half-typed values survive). */
export type RawValue = string | boolean;

export interface IValidated {
  value?: unknown;
  error?: string;
}

/** The initial raw value of a field, from its default. */
export function initialRaw(field: IOptionField): RawValue {
  switch (field.spec.type) {
    case 'bool':
      return Boolean(field.default);
    case 'mapping':
      return JSON.stringify(field.default ?? {}, null, 1);
    default:
      return field.default === null || field.default === undefined
        ? ''
        : String(field.default);
  }
}

/** Parse and check one raw value against its spec. */
export function validateOption(
  field: IOptionField,
  raw: RawValue,
  trans: TranslationBundle
): IValidated {
  const spec = field.spec;
  switch (spec.type) {
    case 'int':
    case 'float': {
      const text = String(raw).trim();
      const isInt = spec.type === 'int';
      const ok = isInt
        ? /^[+-]?\d+$/.test(text)
        : text !== '' && Number.isFinite(Number(text));
      if (!ok) {
        return {
          error: isInt
            ? trans.__('Enter a whole number')
            : trans.__('Enter a number')
        };
      }
      const value = Number(text);
      if (spec.min !== null && spec.min !== undefined && value < spec.min) {
        return { error: trans.__('Must be at least %1', spec.min) };
      }
      if (spec.max !== null && spec.max !== undefined && value > spec.max) {
        return { error: trans.__('Must be at most %1', spec.max) };
      }
      return { value };
    }
    case 'bool':
      return { value: Boolean(raw) };
    case 'select':
      return spec.options.includes(String(raw))
        ? { value: String(raw) }
        : { error: trans.__('Choose one of the listed values') };
    case 'mapping': {
      let parsed: unknown;
      try {
        parsed = JSON.parse(String(raw).trim() || '{}');
      } catch {
        parsed = undefined;
      }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
        return {
          error: trans.__('Enter a JSON object, e.g. {"KEY": "value"}')
        };
      }
      return { value: parsed };
    }
    default:
      return { value: String(raw) };
  }
}

function rangeHint(
  field: IOptionField,
  trans: TranslationBundle
): string | null {
  const spec = field.spec;
  if (spec.type !== 'int' && spec.type !== 'float') {
    return null;
  }
  const hasMin = spec.min !== null && spec.min !== undefined;
  const hasMax = spec.max !== null && spec.max !== undefined;
  if (hasMin && hasMax) {
    return trans.__('From %1 to %2', spec.min, spec.max);
  }
  if (hasMin) {
    return trans.__('At least %1', spec.min);
  }
  if (hasMax) {
    return trans.__('At most %1', spec.max);
  }
  return null;
}

export interface IOptionInputProps {
  field: IOptionField;
  raw: RawValue;
  error?: string;
  disabled?: boolean;
  onChange: (raw: RawValue) => void;
  trans: TranslationBundle;
}

/** The input for one option, its label, range hint and validation message. */
export function OptionInput(props: IOptionInputProps): JSX.Element {
  const { field, raw, error, disabled, onChange, trans } = props;
  const id = `jp-DaskGateway-option-${field.field}`;
  const label = field.label || field.field;
  const invalid = error ? 'jp-mod-invalid' : '';
  const messageId = `${id}-message`;
  const common = {
    id,
    name: field.field,
    disabled,
    className: invalid,
    'aria-invalid': !!error,
    'aria-describedby': error ? messageId : undefined
  };
  let input: JSX.Element;
  switch (field.spec.type) {
    case 'bool':
      return (
        <div className="jp-DaskGateway-field jp-mod-checkbox">
          <input
            {...common}
            type="checkbox"
            checked={Boolean(raw)}
            onChange={e => onChange(e.currentTarget.checked)}
          />
          <label htmlFor={id}>{label}</label>
        </div>
      );
    case 'select':
      input = (
        <select
          {...common}
          value={String(raw)}
          onChange={e => onChange(e.currentTarget.value)}
        >
          {field.spec.options.map(option => (
            <option key={option} value={option}>
              {option}
            </option>
          ))}
        </select>
      );
      break;
    case 'mapping':
      input = (
        <textarea
          {...common}
          spellCheck={false}
          value={String(raw)}
          onChange={e => onChange(e.currentTarget.value)}
        />
      );
      break;
    case 'int':
    case 'float':
      input = (
        <input
          {...common}
          type="text"
          inputMode={field.spec.type === 'int' ? 'numeric' : 'decimal'}
          value={String(raw)}
          onChange={e => onChange(e.currentTarget.value)}
        />
      );
      break;
    default:
      input = (
        <input
          {...common}
          type="text"
          value={String(raw)}
          onChange={e => onChange(e.currentTarget.value)}
        />
      );
  }
  const hint = rangeHint(field, trans);
  return (
    <div className="jp-DaskGateway-field">
      <label htmlFor={id}>{label}</label>
      {input}
      {hint && !error && <span className="jp-DaskGateway-hint">{hint}</span>}
      {error && (
        <span id={messageId} className="jp-DaskGateway-validation" role="alert">
          {error}
        </span>
      )}
    </div>
  );
}

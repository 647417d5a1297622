/**
 * Small pure formatters for the cluster cards (sizes, durations, counts) and the
 * connection snippet inserted into notebooks. No DOM, no state.
 */

import { TranslationBundle } from '@jupyterlab/translation';

/** `2147483648` → `2.0 GiB`. */
export function formatBytes(bytes: number | null): string {
  if (bytes === null || !Number.isFinite(bytes)) {
    return '–';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** `95` → `1 min`, `7300` → `2 h 1 min`; seconds under a minute. */
export function formatAge(
  seconds: number | null,
  trans: TranslationBundle
): string {
  if (seconds === null || !Number.isFinite(seconds)) {
    return '–';
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return trans.__('%1 s', s);
  }
  const minutes = Math.floor(s / 60);
  if (minutes < 60) {
    return trans.__('%1 min', minutes);
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return trans.__('%1 h %2 min', hours, minutes % 60);
  }
  return trans.__('%1 d %2 h', Math.floor(hours / 24), hours % 24);
}

/** Cores may be fractional (`0.5`); show at most two decimals. */
export function formatCores(cores: number | null): string {
  if (cores === null || !Number.isFinite(cores)) {
    return '–';
  }
  return String(Math.round(cores * 100) / 100);
}

/** An event's time: the time of day for today's, else the date too (the viewer's locale). */
export function formatEventTime(ms: number, now: number = Date.now()): string {
  const date = new Date(ms);
  const time = date.toLocaleTimeString(undefined, {
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit'
  });
  if (date.toDateString() === new Date(now).toDateString()) {
    return time;
  }
  return `${date.toLocaleDateString()} ${time}`;
}

/** A short form of a generated name (uuid hex) for narrow cards; the full one is in the title. */
export function shortName(name: string): string {
  return /^[0-9a-f]{32}$/.test(name) ? name.slice(0, 12) + '…' : name;
}

/** The Python that connects a notebook to a cluster: the gateway client, not a raw address. */
export function connectionCode(name: string): string {
  return [
    'from dask_gateway import Gateway',
    '',
    'gateway = Gateway()',
    `cluster = gateway.connect(${JSON.stringify(name)})`,
    'client = cluster.get_client()',
    'client'
  ].join('\n');
}

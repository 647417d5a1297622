/**
 * Opening a dashboard tab: directly, or (for a dashboard behind the Hub's login
 * that dask-labextension will check too) a blank tab at once that goes to the
 * dashboard after one login request.
 */

import { isSameOrigin, logInToDashboard, openDashboardTab } from '../dashboard';

// jsdom may have no fetch; the tests put their own in place
const realFetch = (globalThis as any).fetch;
const URL_A = `${window.location.origin}/services/dask-gateway/clusters/a/status`;

/** A window.open result: records where it was sent. */
function fakeTab(events: string[]) {
  const tab: any = {
    opener: window,
    closed: false,
    document: { title: '', body: { textContent: '' } },
    location: {}
  };
  Object.defineProperty(tab.location, 'href', {
    set: (value: string) => events.push(`navigate ${value}`)
  });
  return tab;
}

describe('openDashboardTab', () => {
  let open: jest.SpyInstance;
  let fetchMock: jest.Mock;
  let events: string[];
  let finishLogin: (ok: boolean) => void;

  beforeEach(() => {
    events = [];
    open = jest.spyOn(window, 'open');
    fetchMock = jest.fn(
      (url: string) =>
        new Promise(resolve => {
          events.push(`login ${url}`);
          finishLogin = ok => resolve({ ok } as Response);
        })
    );
    (globalThis as any).fetch = fetchMock;
  });
  afterEach(() => {
    open.mockRestore();
    (globalThis as any).fetch = realFetch;
  });

  it('opens the dashboard directly when no login has to come first', async () => {
    open.mockReturnValue(null);
    await openDashboardTab(URL_A, false);
    expect(open).toHaveBeenCalledWith(URL_A, '_blank', 'noopener');
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it('opens a tab during the click and sends it on after the login', async () => {
    const tab = fakeTab(events);
    open.mockImplementation(() => {
      events.push('open');
      return tab;
    });
    const done = openDashboardTab(URL_A, true);
    // synchronously, while the click still allows pop-ups
    expect(open).toHaveBeenCalledWith('', '_blank');
    expect(tab.opener).toBeNull();
    expect(tab.document.body.textContent).toMatch(/Opening/);
    await Promise.resolve();
    expect(events).toEqual(['open', `login ${URL_A}`]);
    finishLogin(true);
    await done;
    expect(events).toEqual(['open', `login ${URL_A}`, `navigate ${URL_A}`]);
  });

  it('sends the tab on even when the login request failed', async () => {
    const tab = fakeTab(events);
    open.mockReturnValue(tab);
    fetchMock.mockRejectedValueOnce(new TypeError('network'));
    await openDashboardTab(URL_A, true);
    expect(events).toEqual([`navigate ${URL_A}`]);
  });

  it('leaves a tab the user already closed alone', async () => {
    const tab = fakeTab(events);
    open.mockReturnValue(tab);
    const done = openDashboardTab(URL_A, true);
    tab.closed = true;
    await Promise.resolve();
    finishLogin(true);
    await done;
    expect(events).toEqual([`login ${URL_A}`]);
    expect(open).toHaveBeenCalledTimes(1);
  });

  it('tries a plain pop-up when the blank tab was blocked', async () => {
    open.mockReturnValue(null);
    const done = openDashboardTab(URL_A, true);
    await Promise.resolve();
    finishLogin(true);
    await done;
    expect(open).toHaveBeenLastCalledWith(URL_A, '_blank', 'noopener');
  });
});

describe('logInToDashboard', () => {
  afterEach(() => {
    (globalThis as any).fetch = realFetch;
  });

  it('sends the cookies of this origin and reports success', async () => {
    const fetchMock = jest.fn(async () => ({ ok: true }) as Response);
    (globalThis as any).fetch = fetchMock;
    expect(await logInToDashboard(URL_A)).toBe(true);
    expect(fetchMock).toHaveBeenCalledWith(
      URL_A,
      expect.objectContaining({ credentials: 'same-origin' })
    );
  });

  it('gives up after the timeout', async () => {
    (globalThis as any).fetch = jest.fn(
      (url: string, init: RequestInit) =>
        new Promise((resolve, reject) =>
          init.signal!.addEventListener('abort', () =>
            reject(new DOMException('aborted', 'AbortError'))
          )
        )
    );
    expect(await logInToDashboard(URL_A, 20)).toBe(false);
  });
});

describe('isSameOrigin', () => {
  it('tells the Hub origin from another', () => {
    expect(isSameOrigin(URL_A)).toBe(true);
    expect(isSameOrigin('/services/dask-gateway/clusters/a/status')).toBe(true);
    expect(isSameOrigin('http://gateway.example:8000/clusters/a/status')).toBe(
      false
    );
  });
});

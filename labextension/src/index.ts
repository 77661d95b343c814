// The DecentralML side panel: chain status, accounts, models, open proposals (with votes) and
// recent rounds, read from the server extension's REST API under <base_url>/decentralml/.
// It runs in JupyterLab and in Notebook 7: it needs only the generic shell (never ILabShell);
// the settings registry and the command palette are used where the front end has them.

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

const PLUGIN_ID = 'decentralml-jupyter:panel';
const PANEL_ID = 'decentralml-panel';
// The defaults of schema/panel.json, for a front end without the settings registry.
const DEFAULT_POLL_S = 3;
const DEFAULT_ROUNDS = 8;
export const COMMANDS = { show: 'decentralml:show-panel', refresh: 'decentralml:refresh' };

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><circle cx="12" cy="4" r="2.6"/><circle cx="4.5" cy="18" r="2.6"/>
<circle cx="19.5" cy="18" r="2.6"/><path d="M11 6.5h2v5.2l5.6 4.2-1.2 1.6-5.4-4-5.4 4-1.2-1.6L11 11.7z"/></g></svg>`;

export const dfmlIcon = new LabIcon({ name: 'decentralml-jupyter:icon', svgstr: ICON_SVG });

interface IChainStatus {
  url: string;
  running: boolean;
  block: number | null;
  spec_name: string | null;
  spec_version: number | null;
}

interface IToken {
  symbol: string;
  decimals: number;
}

interface IStatus {
  chain: IChainStatus;
  storage: { url: string; running: boolean };
  token?: IToken | null;
}

/**
 * An amount of the chain's smallest unit. The REST API sends amounts as decimal strings
 * (u128 balances exceed what a JS number holds exactly); numbers are taken as they come.
 */
type Amount = string | number | bigint;

interface IAccount {
  name: string;
  address: string;
  free: Amount;
  reserved: Amount;
}

interface IModel {
  id: number;
  name: string;
  status: string;
  round: number;
  strategy: string;
  total_stake: Amount;
}

interface IProposal {
  id: number;
  kind: string;
  target: number | string;
  status: string;
  ayes: Amount;
  nays: Amount;
  deadline: number;
}

interface IRound {
  round_id: number;
  model_id: number;
  status: string;
  selected: string[];
  submitted: string[];
  metrics: Record<string, number>;
}

/** The panel's settings (schema/panel.json). */
export interface IPanelSettings {
  pollInterval: number; // seconds
  rounds: number; // rounds listed
}

/** A failed request in the API's contract: what went wrong and what to do. */
class ApiError extends Error {
  constructor(
    message: string,
    readonly hint: string
  ) {
    super(message);
  }
}

/** Calls <base_url>/decentralml/PATH with the page's token and XSRF cookie. */
export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'decentralml', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(`Jupyter server not reachable: ${error}`, 'is the server running?');
  }
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body?.error ?? body?.message ?? `${response.status} ${response.statusText}`;
    throw new ApiError(message, body?.hint ?? '');
  }
  return body as T;
}

/** A DOM element with text or children; never innerHTML, since names come from the chain. */
function h(
  tag: string,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElement {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

/** An error as a person reads it: what went wrong — what to do. */
function describe(error: unknown): string {
  const err = error as ApiError;
  const hint = err?.hint ? ` — ${err.hint}` : '';
  return `${err?.message ?? String(error)}${hint}`;
}

/** An amount as an exact integer (from its decimal string, never through a float). */
export function units(amount: Amount): bigint {
  if (typeof amount === 'bigint') {
    return amount;
  }
  if (typeof amount === 'number') {
    return BigInt(Math.round(amount));
  }
  if (!/^-?\d+$/.test(amount.trim())) {
    throw new Error(`not an amount: ${amount}`);
  }
  return BigInt(amount.trim());
}

/**
 * An amount in the chain's token, exactly: every decimal the chain's `decimals` gives it
 * (trailing zeros dropped), by integer arithmetic. Before the chain said its token, the
 * integer of its smallest unit.
 */
export function tokens(amount: Amount, token: IToken | null): string {
  const value = units(amount);
  if (token === null) {
    return `${value.toLocaleString('en-US')} units`;
  }
  const base = BigInt(10) ** BigInt(token.decimals);
  const negative = value < BigInt(0);
  const abs = negative ? -value : value;
  const whole = (abs / base).toLocaleString('en-US');
  const frac =
    token.decimals > 0
      ? (abs % base).toString().padStart(token.decimals, '0').replace(/0+$/, '')
      : '';
  return `${negative ? '-' : ''}${whole}${frac ? `.${frac}` : ''} ${token.symbol}`;
}

/** The metric a round's model is judged by (its Keras name: accuracy, mae, ...) and value. */
export function roundMetric(metrics: Record<string, number> | undefined): string {
  const m = metrics ?? {};
  const own = Object.keys(m).find(
    k =>
      !k.endsWith('_ppm') && !k.startsWith('base_') && k !== 'accuracy' && k !== 'loss'
  );
  const name = own ?? ('accuracy' in m ? 'accuracy' : undefined);
  return name === undefined || typeof m[name] !== 'number'
    ? '–'
    : `${name} ${Number(m[name].toFixed(3))}`;
}

/** An amount's cell: exact in the chain's token, the integer in its tooltip; long amounts
 * wrap within the narrow panel instead of pushing columns out of it. */
function amount(value: Amount, token: IToken | null): HTMLElement {
  return h('span', { class: 'dfml-amount', title: `${units(value)} units` }, tokens(value, token));
}

function table(headers: string[], rows: (Node | string)[][], empty: string): HTMLElement {
  if (rows.length === 0) {
    return h('p', { class: 'dfml-empty' }, empty);
  }
  return h(
    'table',
    { class: 'dfml-table' },
    h('thead', {}, h('tr', {}, ...headers.map(x => h('th', {}, x)))),
    h('tbody', {}, ...rows.map(r => h('tr', {}, ...r.map(c => h('td', {}, c)))))
  );
}

/** The side panel. Polls `status`; reloads everything else when the block height moves. */
export class DecentralMLPanel extends Widget {
  private timer: number | null = null;
  private lastBlock: number | null | undefined = undefined;
  private busy = false;
  private token: IToken | null = null; // the chain's, once the status says it
  private settings: IPanelSettings = { pollInterval: DEFAULT_POLL_S, rounds: DEFAULT_ROUNDS };
  private again = false;
  private message: HTMLElement | null = null;
  private notice: HTMLElement | null = null;
  private readonly sections: Record<string, HTMLElement> = {};

  constructor() {
    super();
    this.id = PANEL_ID;
    this.addClass('dfml-panel');
    this.title.icon = dfmlIcon;
    this.title.caption = 'DecentralML';
    const refresh = h('button', { class: 'dfml-refresh', title: 'Reload now' }, 'Refresh');
    refresh.addEventListener('click', () => void this.refresh(true));
    this.node.append(h('header', {}, h('h2', {}, 'DecentralML'), refresh));
    for (const [key, title] of [
      ['chain', 'Chain'],
      ['accounts', 'Accounts'],
      ['models', 'Models'],
      ['proposals', 'Open proposals'],
      ['rounds', 'Rounds']
    ]) {
      const body = h('div', { class: 'dfml-body', 'data-dfml': key }, 'loading…');
      this.sections[key] = body;
      this.node.append(h('section', { class: 'dfml-section' }, h('h3', {}, title), body));
    }
    // the outcome of the last vote stays until the next one; polls only touch `message`
    this.notice = h('p', { class: 'dfml-notice', 'data-dfml': 'notice' });
    this.message = h('p', { class: 'dfml-message', 'data-dfml': 'message' });
    this.node.append(this.notice, this.message);
  }

  /** Apply settings (from the settings registry): a new poll interval takes effect now. */
  configure(settings: Partial<IPanelSettings>): void {
    const poll = Number(settings.pollInterval ?? DEFAULT_POLL_S);
    const rounds = Number(settings.rounds ?? DEFAULT_ROUNDS);
    this.settings = {
      pollInterval: Number.isFinite(poll) && poll >= 0.5 ? poll : DEFAULT_POLL_S,
      rounds: Number.isInteger(rounds) && rounds >= 1 ? rounds : DEFAULT_ROUNDS
    };
    this.node.dataset.pollMs = String(Math.round(this.settings.pollInterval * 1000));
    if (this.timer !== null) {
      this.stopPolling();
      this.startPolling();
    }
    void this.refresh(true);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this.startPolling();
  }

  protected onBeforeDetach(msg: Message): void {
    this.stopPolling();
    super.onBeforeDetach(msg);
  }

  private startPolling(): void {
    const ms = Math.round(this.settings.pollInterval * 1000);
    this.node.dataset.pollMs = String(ms);
    this.timer = window.setInterval(() => void this.refresh(false), ms);
  }

  private stopPolling(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.refresh(true);
  }

  /** Poll the chain; reload the lists when a new block arrived (or when `force`). */
  async refresh(force: boolean): Promise<void> {
    if (!this.isVisible) {
      return;
    }
    if (this.busy) {
      this.again ||= force;
      return;
    }
    this.busy = true;
    try {
      const status = await api<IStatus>('status');
      this.token = status.token ?? this.token;
      this.renderStatus(status);
      const block = status.chain.running ? status.chain.block : null;
      if (force || block !== this.lastBlock) {
        this.lastBlock = block;
        await this.reload(status.chain.running, status.chain.url);
      }
    } catch (error) {
      this.lastBlock = undefined;
      this.showError(error);
    } finally {
      this.busy = false;
    }
    if (this.again) {
      this.again = false;
      await this.refresh(true);
    }
  }

  private async reload(running: boolean, url = ''): Promise<void> {
    if (!running) {
      for (const key of ['accounts', 'models', 'proposals', 'rounds']) {
        this.sections[key].replaceChildren(h('p', { class: 'dfml-empty' }, 'chain not running'));
      }
      // say what to do, not only what is wrong
      this.showError(
        new ApiError(
          `no chain answers at ${url}`,
          'start one: dfml chain up (or dfml devnet up), or point the panel at another URL'
        )
      );
      return;
    }
    const results = await Promise.allSettled([
      api<IAccount[]>('accounts'),
      api<IModel[]>('models'),
      api<IProposal[]>('proposals?open=1'),
      api<IRound[]>(`rounds?limit=${this.settings.rounds}`)
    ]);
    const [accounts, models, proposals, rounds] = results;
    this.fill('accounts', accounts, (rows: IAccount[]) =>
      table(
        ['account', 'free', 'reserved'],
        rows.map(a => [
          h('span', { title: a.address }, a.name),
          amount(a.free, this.token),
          amount(a.reserved, this.token)
        ]),
        'no dev accounts'
      )
    );
    this.fill('models', models, (rows: IModel[]) =>
      table(
        ['id', 'model', 'status', 'round', 'stake'],
        rows.map(m => [
          String(m.id),
          h('span', { class: 'dfml-wrap' }, m.name),
          m.status,
          String(m.round),
          amount(m.total_stake, this.token)
        ]),
        'no models yet'
      )
    );
    this.fill('proposals', proposals, (rows: IProposal[]) =>
      rows.length === 0
        ? h('p', { class: 'dfml-empty' }, 'no open proposals')
        : h('div', {}, ...rows.map(p => this.proposalCard(p)))
    );
    this.fill('rounds', rounds, (rows: IRound[]) =>
      table(
        ['round', 'model', 'status', 'updates', 'metric'],
        rows.map(r => [
          String(r.round_id),
          String(r.model_id),
          h('span', { class: `dfml-status dfml-status-${r.status}` }, r.status),
          `${r.submitted.length}/${r.selected.length}`,
          roundMetric(r.metrics)
        ]),
        'no rounds yet'
      )
    );
    const failed = results.find(r => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) {
      this.showError(failed.reason);
    } else {
      this.setMessage(`updated ${new Date().toLocaleTimeString()}`, false);
    }
  }

  private fill<T>(key: string, result: PromiseSettledResult<T>, render: (v: T) => Node): void {
    const body = this.sections[key];
    if (result.status === 'fulfilled') {
      body.replaceChildren(render(result.value));
    } else {
      const err = result.reason as ApiError;
      body.replaceChildren(h('p', { class: 'dfml-error' }, String(err.message ?? err)));
    }
  }

  private renderStatus(status: IStatus): void {
    const c = status.chain;
    const dot = (up: boolean) =>
      h('span', { class: `dfml-dot ${up ? 'dfml-up' : 'dfml-down'}` }, up ? '●' : '○');
    const rows = [
      h(
        'div',
        { class: 'dfml-row' },
        dot(c.running),
        c.running ? 'block ' : 'not running',
        c.running ? h('strong', { 'data-dfml': 'block' }, `#${c.block}`) : ''
      ),
      h('div', { class: 'dfml-row dfml-muted' }, h('code', {}, c.url)),
      c.running ? h('div', { class: 'dfml-row dfml-muted' }, `${c.spec_name} v${c.spec_version}`) : '',
      h(
        'div',
        { class: 'dfml-row' },
        dot(status.storage.running),
        'storage ',
        h('code', {}, status.storage.url),
        status.storage.running ? '' : ' (not running)'
      )
    ];
    this.sections.chain.replaceChildren(...rows);
  }

  private proposalCard(p: IProposal): HTMLElement {
    const target = typeof p.target === 'number' ? `model ${p.target}` : p.target;
    return h(
      'div',
      { class: 'dfml-card', 'data-dfml': `proposal-${p.id}` },
      h('div', {}, h('strong', {}, `#${p.id} ${p.kind}`), ` → ${target}`),
      h(
        'div',
        { class: 'dfml-muted' },
        'ayes ',
        h('span', { 'data-dfml': `ayes-${p.id}` }, tokens(p.ayes, this.token)),
        ` · nays ${tokens(p.nays, this.token)} · ends #${p.deadline}`
      ),
      this.voteButtons(p)
    );
  }

  private voteButtons(p: IProposal): HTMLElement {
    const box = h('span', { class: 'dfml-vote' });
    for (const choice of ['aye', 'nay']) {
      const button = h(
        'button',
        { class: `dfml-${choice}`, 'data-dfml': `vote-${p.id}-${choice}` },
        choice === 'aye' ? 'Aye' : 'Nay'
      ) as HTMLButtonElement;
      button.addEventListener('click', () => void this.vote(p.id, choice, box));
      box.append(button);
    }
    return box;
  }

  private async vote(id: number, choice: string, box: HTMLElement): Promise<void> {
    box.querySelectorAll('button').forEach(b => (b.disabled = true));
    try {
      const result = await api<{ receipt: { block_number: number } }>(`proposals/${id}/vote`, {
        method: 'POST',
        body: JSON.stringify({ choice })
      });
      this.setNotice(
        `voted ${choice} on proposal ${id} in block #${result.receipt.block_number}`,
        false
      );
      await this.refresh(true);
    } catch (error) {
      this.setNotice(describe(error), true);
      box.querySelectorAll('button').forEach(b => (b.disabled = false));
    }
  }

  private showError(error: unknown): void {
    this.setMessage(describe(error), true);
  }

  private setNotice(text: string, isError: boolean): void {
    if (this.notice) {
      this.notice.textContent = text;
      this.notice.classList.toggle('dfml-error', isError);
    }
  }

  private setMessage(text: string, isError: boolean): void {
    if (this.message) {
      this.message.textContent = text;
      this.message.classList.toggle('dfml-error', isError);
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'DecentralML side panel: chain, accounts, models, proposals and rounds.',
  autoStart: true,
  optional: [ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    registry: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const panel = new DecentralMLPanel();
    // JupyterLab's shell and Notebook 7's both take side panels in 'left' (Notebook 7 shows
    // it from its View menu, or when the command activates it)
    app.shell.add(panel, 'left', { rank: 900 });
    app.commands.addCommand(COMMANDS.show, {
      label: 'Show the DecentralML panel',
      caption: 'Chain, accounts, models, proposals and rounds of DecentralML',
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(COMMANDS.refresh, {
      label: 'Refresh the DecentralML panel',
      execute: () => panel.refresh(true)
    });
    if (palette) {
      for (const command of [COMMANDS.show, COMMANDS.refresh]) {
        palette.addItem({ command, category: 'DecentralML' });
      }
    }
    if (registry) {
      registry
        .load(PLUGIN_ID)
        .then(settings => {
          const read = () => panel.configure(settings.composite as Partial<IPanelSettings>);
          read();
          settings.changed.connect(read);
        })
        .catch(reason => console.warn(`decentralml: settings not loaded: ${reason}`));
    }
  }
};

export default plugin;

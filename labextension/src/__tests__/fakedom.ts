/**
 * A minimal DOM for hostile.spec.ts. The jest suite runs on node (jest.config.js: no jsdom, which is not a
 * dependency of the extension), so this provides just what sidebar.ts, panel.ts, statusbar.ts and chart.ts
 * call: createElement(NS), text nodes, attributes, className/classList, dataset, style, events, closest.
 *
 * It is stricter than a browser on purpose: every HTML-parsing sink (innerHTML, outerHTML and
 * insertAdjacentHTML setters, document.write, createRange) and every URL-bearing property (href, src,
 * srcdoc, action, formAction) throws and is recorded in ``sinks``, and so does an ``on*`` attribute, so a
 * render path that builds markup or a link from run data fails the spec instead of passing silently. The
 * ``outerHTML`` getter serializes as a browser does (text and attribute values escaped), for assertions on
 * the markup a reader of the DOM would see.
 */

export const HTML_NS = 'http://www.w3.org/1999/xhtml';

/** The HTML sinks and URL properties that were used, for the spec to assert that none was. */
export const sinks: string[] = [];

function sink(what: string): never {
  sinks.push(what);
  throw new Error(`fakedom: ${what} used (render run data with textContent / createElement instead)`);
}

export class FakeNode {
  parentNode: FakeElement | null = null;
  childNodes: FakeNode[] = [];
  readonly nodeType: number = 0;

  get textContent(): string {
    return this.childNodes.map(c => c.textContent).join('');
  }

  set textContent(value: string) {
    this.replaceChildren(...(value === '' || value === null || value === undefined ? [] : [String(value)]));
  }

  get firstChild(): FakeNode | null {
    return this.childNodes[0] || null;
  }

  appendChild<T extends FakeNode>(child: T): T {
    child.remove();
    child.parentNode = this as unknown as FakeElement;
    this.childNodes.push(child);
    return child;
  }

  append(...nodes: (FakeNode | string)[]): void {
    for (const n of nodes) {
      this.appendChild(typeof n === 'string' ? new FakeText(n) : n);
    }
  }

  replaceChildren(...nodes: (FakeNode | string)[]): void {
    for (const c of this.childNodes) {
      c.parentNode = null;
    }
    this.childNodes = [];
    this.append(...nodes);
  }

  remove(): void {
    if (this.parentNode) {
      const siblings = this.parentNode.childNodes;
      siblings.splice(siblings.indexOf(this), 1);
      this.parentNode = null;
    }
  }

  contains(node: FakeNode | null): boolean {
    for (let n = node; n; n = n.parentNode) {
      if (n === this) {
        return true;
      }
    }
    return false;
  }
}

export class FakeText extends FakeNode {
  readonly nodeType: number = 3;
  constructor(public data: string) {
    super();
  }

  get textContent(): string {
    return this.data;
  }

  set textContent(value: string) {
    this.data = String(value);
  }
}

export class FakeEvent {
  target: FakeElement | null = null;
  defaultPrevented = false;
  key?: string;
  constructor(readonly type: string, init: { key?: string } = {}) {
    this.key = init.key;
  }
  preventDefault(): void {
    this.defaultPrevented = true;
  }
}

function escapeText(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\u00a0/g, '&nbsp;');
}

function escapeAttr(s: string): string {
  // as browsers do since the HTML spec's 2025 change: < and > escaped in attribute values too
  return escapeText(s).replace(/"/g, '&quot;');
}

function serialize(node: FakeNode): string {
  if (node instanceof FakeText) {
    return escapeText(node.data);
  }
  if (node instanceof FakeElement) {
    const name = node.tagName.toLowerCase();
    const attrs = Array.from(node.attributes.entries())
      .map(([k, v]) => ` ${k}="${escapeAttr(v)}"`)
      .join('');
    return `<${name}${attrs}>${node.childNodes.map(serialize).join('')}</${name}>`;
  }
  return '';
}

type Listener = (ev: FakeEvent) => void;

export class FakeElement extends FakeNode {
  readonly nodeType: number = 1;
  readonly attributes = new Map<string, string>();
  readonly style: { [key: string]: string } = {};
  disabled = false;
  readonly classList = {
    add: (...names: string[]) => this._setClasses([...this._classes(), ...names]),
    remove: (...names: string[]) => this._setClasses(this._classes().filter(c => !names.includes(c))),
    contains: (name: string) => this._classes().includes(name),
    toggle: (name: string, force?: boolean) => {
      const on = force ?? !this.classList.contains(name);
      on ? this.classList.add(name) : this.classList.remove(name);
      return on;
    }
  };
  readonly dataset: { [key: string]: string | undefined };
  private _listeners = new Map<string, Listener[]>();

  constructor(readonly tagName: string, readonly namespaceURI: string = HTML_NS) {
    super();
    const dataAttr = (key: string) => 'data-' + key.replace(/[A-Z]/g, c => '-' + c.toLowerCase());
    this.dataset = new Proxy({} as { [key: string]: string | undefined }, {
      get: (_t, key) => (typeof key === 'string' ? this.getAttribute(dataAttr(key)) ?? undefined : undefined),
      set: (_t, key, value) => {
        this.setAttribute(dataAttr(String(key)), String(value));
        return true;
      }
    });
  }

  private _classes(): string[] {
    return (this.getAttribute('class') || '').split(/\s+/).filter(Boolean);
  }

  private _setClasses(names: string[]): void {
    this.setAttribute('class', Array.from(new Set(names)).join(' '));
  }

  setAttribute(name: string, value: string): void {
    const key = this.namespaceURI === HTML_NS ? String(name).toLowerCase() : String(name);
    if (/^on/i.test(key)) {
      sink(`an event handler attribute ${key}`);
    }
    if (/^(href|src|srcdoc|action|formaction|xlink:href)$/i.test(key)) {
      sink(`a URL attribute ${key}`);
    }
    this.attributes.set(key, String(value));
  }

  getAttribute(name: string): string | null {
    const v = this.attributes.get(this.namespaceURI === HTML_NS ? name.toLowerCase() : name);
    return v === undefined ? null : v;
  }

  hasAttribute(name: string): boolean {
    return this.getAttribute(name) !== null;
  }

  removeAttribute(name: string): void {
    this.attributes.delete(name);
  }

  get className(): string {
    return this.getAttribute('class') || '';
  }
  set className(value: string) {
    this.setAttribute('class', value);
  }
  get id(): string {
    return this.getAttribute('id') || '';
  }
  set id(value: string) {
    this.setAttribute('id', value);
  }
  get title(): string {
    return this.getAttribute('title') || '';
  }
  set title(value: string) {
    this.setAttribute('title', value);
  }
  get tabIndex(): number {
    return Number(this.getAttribute('tabindex') ?? -1);
  }
  set tabIndex(value: number) {
    this.setAttribute('tabindex', String(value));
  }

  // the sinks a hostile string must never reach
  get innerHTML(): string {
    return this.childNodes.map(serialize).join('');
  }
  set innerHTML(_value: string) {
    sink('innerHTML');
  }
  get outerHTML(): string {
    return serialize(this);
  }
  set outerHTML(_value: string) {
    sink('outerHTML');
  }
  insertAdjacentHTML(): void {
    sink('insertAdjacentHTML');
  }
  set href(_value: string) {
    sink('href');
  }
  set src(_value: string) {
    sink('src');
  }
  set srcdoc(_value: string) {
    sink('srcdoc');
  }
  set action(_value: string) {
    sink('action');
  }
  set formAction(_value: string) {
    sink('formAction');
  }

  get children(): FakeElement[] {
    return this.childNodes.filter((c): c is FakeElement => c instanceof FakeElement);
  }

  /** ``.a.b``, ``tag``, ``tag.a`` only */
  matches(selector: string): boolean {
    const [tag, ...classes] = selector.split('.');
    return (!tag || this.tagName.toLowerCase() === tag.toLowerCase()) && classes.every(c => this.classList.contains(c));
  }

  closest(selector: string): FakeElement | null {
    for (let n: FakeElement | null = this; n; n = n.parentNode) {
      if (n.matches(selector)) {
        return n;
      }
    }
    return null;
  }

  /** This element's descendants, depth first. */
  descendants(): FakeElement[] {
    return this.children.flatMap(c => [c, ...c.descendants()]);
  }

  querySelectorAll(selector: string): FakeElement[] {
    return this.descendants().filter(e => e.matches(selector));
  }

  querySelector(selector: string): FakeElement | null {
    return this.querySelectorAll(selector)[0] || null;
  }

  addEventListener(type: string, fn: Listener): void {
    this._listeners.set(type, [...(this._listeners.get(type) || []), fn]);
  }

  removeEventListener(type: string, fn: Listener): void {
    this._listeners.set(type, (this._listeners.get(type) || []).filter(f => f !== fn));
  }

  /** Bubbles up to the root. */
  dispatchEvent(ev: FakeEvent): boolean {
    ev.target = ev.target || this;
    for (let n: FakeElement | null = this; n; n = n.parentNode) {
      for (const fn of n._listeners.get(ev.type) || []) {
        fn(ev);
      }
    }
    return !ev.defaultPrevented;
  }

  focus(): void {
    // nothing to do
  }
  blur(): void {
    // nothing to do
  }
}

export const fakeDocument = {
  hidden: false,
  body: new FakeElement('BODY'),
  createElement: (tag: string) => new FakeElement(tag.toUpperCase()),
  createElementNS: (ns: string, tag: string) => new FakeElement(tag, ns),
  createTextNode: (text: string) => new FakeText(String(text)),
  createDocumentFragment: () => new FakeElement('#fragment'),
  addEventListener: () => undefined,
  removeEventListener: () => undefined,
  write: () => sink('document.write'),
  writeln: () => sink('document.writeln'),
  createRange: () => sink('document.createRange (createContextualFragment)')
};

/** Make ``document`` and ``window`` (the global object, as in a browser) the fake ones. */
export function installFakeDom(): void {
  const g = globalThis as any;
  g.document = fakeDocument;
  g.window = globalThis;
}

/**
 * Stands in for @lumino/widgets' Widget (jest.mock in the spec): the real module reads ``navigator`` and
 * more of the browser when it loads. Only what the extension's widgets use: a div as ``node``, ``id``
 * mirrored on it, ``title``, ``addClass``, ``dispose``.
 */
export class FakeWidget {
  readonly node = fakeDocument.createElement('div');
  readonly title = { label: '', caption: '', closable: false, icon: null as unknown };
  isDisposed = false;

  get id(): string {
    return this.node.id;
  }
  set id(value: string) {
    this.node.id = value;
  }

  addClass(name: string): void {
    this.node.classList.add(name);
  }

  dispose(): void {
    this.isDisposed = true;
  }
}

/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: it throws on
 * anything a Prometheus server would reject or that breaks the format's rules, and returns every
 * sample.
 *
 * Checked: `# HELP` / `# TYPE` syntax, at most one of each per family and both before the
 * family's samples; every sample belongs to a family with a `# TYPE` (a histogram's samples are
 * `<name>_bucket` with an `le` label, `_sum` and `_count`); a family's samples are contiguous;
 * metric and label names are valid; label values are properly quoted and escaped; no label name
 * twice in one sample; values are floats (or NaN, +Inf, -Inf); no series (name + label set)
 * twice; a histogram's buckets are cumulative, end with `le="+Inf"`, and that bucket equals
 * `_count`.
 */

export interface PromSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface PromFamily {
  readonly name: string;
  readonly type: string;
  readonly help: string | undefined;
  readonly samples: PromSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** A sample value as Prometheus reads it (Go's strconv.ParseFloat: NaN and Inf in any case; prom-client writes `Nan`). */
function parseValue(text: string, line: string): number {
  if (/^nan$/i.test(text)) return NaN;
  if (/^\+?inf(inity)?$/i.test(text)) return Infinity;
  if (/^-inf(inity)?$/i.test(text)) return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad sample value ${JSON.stringify(text)}: ${line}`);
  return Number(text);
}

/** Parses `{a="x",b="y"}` starting at `s[0] === '{'`; returns the labels and the rest of the line. */
function parseLabels(s: string, line: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  for (;;) {
    if (s[i] === '}') return { labels, rest: s.slice(i + 1) };
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    if (!m) throw new Error(`bad label at ${JSON.stringify(s.slice(i))}: ${line}`);
    const name = m[1] as string;
    i += m[0].length;
    let value = '';
    for (;;) {
      const c = s[i];
      if (c === undefined) throw new Error(`unterminated label value: ${line}`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i + 1];
        if (e === 'n') value += '\n';
        else if (e === '\\' || e === '"') value += e;
        else throw new Error(`bad escape \\${e ?? ''} in a label value: ${line}`);
        i += 2;
        continue;
      }
      if (c === '\n') throw new Error(`raw newline in a label value: ${line}`);
      value += c;
      i++;
    }
    i++; // closing quote
    if (Object.hasOwn(labels, name)) throw new Error(`label ${name} twice: ${line}`);
    labels[name] = value;
    if (s[i] === ',') i++;
    else if (s[i] !== '}') throw new Error(`expected , or } after label ${name}: ${line}`);
  }
}

function seriesKey(name: string, labels: Readonly<Record<string, string>>): string {
  return `${name}{${Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(',')}}`;
}

/** The family a sample name belongs to, given the declared types. */
function familyOf(name: string, types: ReadonlyMap<string, string>): string | undefined {
  if (types.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const t = types.get(base);
    if (t === 'histogram' || (t === 'summary' && suffix !== '_bucket')) return base;
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, PromFamily> {
  if (text !== '' && !text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, PromFamily>();
  const types = new Map<string, string>();
  const helps = new Map<string, string>();
  const series = new Set<string>();
  const finished = new Set<string>();
  let current: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`bad metric name: ${line}`);
      if (families.get(name)?.samples.length) throw new Error(`# ${kind} after samples of ${name}: ${line}`);
      if (kind === 'HELP') {
        if (helps.has(name)) throw new Error(`second # HELP for ${name}`);
        helps.set(name, rest);
      } else {
        if (types.has(name)) throw new Error(`second # TYPE for ${name}`);
        if (!TYPES.has(rest)) throw new Error(`bad type ${JSON.stringify(rest)}: ${line}`);
        types.set(name, rest);
      }
      if (!families.has(name)) families.set(name, { name, type: '', help: undefined, samples: [] });
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(.*)$/.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const name = m[1] as string;
    let rest = m[2] as string;
    let labels: Record<string, string> = {};
    if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, line));
    const fields = rest.trim().split(/\s+/);
    if (!rest.startsWith(' ') || fields.length < 1 || fields.length > 2) throw new Error(`bad sample line: ${line}`);
    if (fields.length === 2 && !/^-?\d+$/.test(fields[1] as string)) throw new Error(`bad timestamp: ${line}`);
    const value = parseValue(fields[0] as string, line);
    for (const l of Object.keys(labels)) if (!LABEL_NAME.test(l)) throw new Error(`bad label name ${l}: ${line}`);
    const family = familyOf(name, types);
    if (family === undefined) throw new Error(`sample ${name} belongs to no # TYPE'd family: ${line}`);
    if (name.endsWith('_bucket') && family !== name && labels['le'] === undefined) throw new Error(`histogram bucket without le: ${line}`);
    if (current !== family) {
      if (finished.has(family)) throw new Error(`samples of ${family} are not contiguous: ${line}`);
      if (current !== undefined) finished.add(current);
      current = family;
    }
    const key = seriesKey(name, labels);
    if (series.has(key)) throw new Error(`duplicate series ${key}`);
    series.add(key);
    (families.get(family) as PromFamily).samples.push({ name, labels, value });
  }
  const out = new Map<string, PromFamily>();
  for (const [name, f] of families) {
    const type = types.get(name);
    if (type === undefined) throw new Error(`family ${name} has # HELP but no # TYPE`);
    const family = { ...f, type, help: helps.get(name) };
    if (type === 'histogram') checkHistogram(family);
    out.set(name, family);
  }
  return out;
}

function checkHistogram(f: PromFamily): void {
  const bySeries = new Map<string, { buckets: Array<{ le: number; value: number }>; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = seriesKey(f.name, rest);
    const entry = bySeries.get(key) ?? { buckets: [] };
    bySeries.set(key, entry);
    if (s.name === `${f.name}_bucket`) entry.buckets.push({ le: parseValue(le as string, `${s.name} le`), value: s.value });
    else if (s.name === `${f.name}_count`) entry.count = s.value;
  }
  for (const [key, e] of bySeries) {
    const last = e.buckets.at(-1);
    if (last?.le !== Infinity) throw new Error(`${key}: buckets must end with le="+Inf"`);
    for (let i = 1; i < e.buckets.length; i++) {
      const [a, b] = [e.buckets[i - 1], e.buckets[i]] as [{ le: number; value: number }, { le: number; value: number }];
      if (!(a.le < b.le)) throw new Error(`${key}: bucket bounds not increasing`);
      if (a.value > b.value) throw new Error(`${key}: buckets not cumulative`);
    }
    if (e.count !== last.value) throw new Error(`${key}: _count ${e.count} != +Inf bucket ${last.value}`);
  }
}

/** The value of the one sample named `name` whose labels include `labels`; undefined if none. */
export function sampleValue(families: ReadonlyMap<string, PromFamily>, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  const matches: PromSample[] = [];
  for (const f of families.values()) {
    for (const s of f.samples) if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) matches.push(s);
  }
  if (matches.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${matches.length} samples`);
  return matches[0]?.value;
}

/** Every sample named `name` (any labels). */
export function samplesNamed(families: ReadonlyMap<string, PromFamily>, name: string): PromSample[] {
  return [...families.values()].flatMap((f) => f.samples.filter((s) => s.name === name));
}

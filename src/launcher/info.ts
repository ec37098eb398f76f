// Reading an INFO reply (ordo's or redis-server's): `# Section` headers,
// `name:value` fields, and ordo's per-group `raft_group_<g>:role=..,term=..,
// leader=..,commit=..,applied=..,lag=..` lines. The local cluster launcher
// finds each group's leader this way; tests, benchmarks and fault runs read
// INFO through the same parser.

/** Fields by name, per section (section names lower-cased: `raft`, `server`, ...). */
export type InfoSections = ReadonlyMap<string, ReadonlyMap<string, string>>;

/** Every section of an INFO reply; fields before any header go under ''. */
export function parseInfo(text: string): InfoSections {
  const sections = new Map<string, Map<string, string>>();
  let current = new Map<string, string>();
  sections.set('', current);
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const name = line.slice(1).trim().toLowerCase();
      current = sections.get(name) ?? new Map<string, string>();
      sections.set(name, current);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon > 0) current.set(line.slice(0, colon), line.slice(colon + 1));
  }
  if (sections.get('')?.size === 0) sections.delete('');
  return sections;
}

/** One field of an INFO reply, whatever its section, or null when absent. */
export function infoField(text: string, name: string): string | null {
  for (const fields of parseInfo(text).values()) {
    const value = fields.get(name);
    if (value !== undefined) return value;
  }
  return null;
}

/** `a=1,b=2` as a map (the value of a raft_group line, of keyspace lines, ...). */
export function parseInfoPairs(value: string): Map<string, string> {
  const pairs = new Map<string, string>();
  for (const pair of value.split(',')) {
    const eq = pair.indexOf('=');
    if (eq > 0) pairs.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return pairs;
}

export interface RaftGroupInfo {
  readonly group: number;
  readonly role: string;
  readonly term: number;
  /** Node id of the leader this node knows, or null (`-`). */
  readonly leader: string | null;
  readonly commit: number;
  readonly applied: number;
  readonly lag: number;
  /** Every field of the line, as printed. */
  readonly fields: ReadonlyMap<string, string>;
}

const RAFT_GROUP_FIELD = /^raft_group_(\d+)$/;

/** The raft_group_<g> lines of an INFO reply (any section), by group id. */
export function parseRaftGroups(text: string): Map<number, RaftGroupInfo> {
  const groups = new Map<number, RaftGroupInfo>();
  for (const fieldsOfSection of parseInfo(text).values()) {
    for (const [name, value] of fieldsOfSection) {
      const m = RAFT_GROUP_FIELD.exec(name);
      if (m === null) continue;
      const fields = parseInfoPairs(value);
      const num = (field: string): number => Number(fields.get(field) ?? 'NaN');
      const leader = fields.get('leader') ?? '-';
      const group = Number(m[1]);
      groups.set(group, {
        group,
        role: fields.get('role') ?? '?',
        term: num('term'),
        leader: leader === '-' || leader === '' ? null : leader,
        commit: num('commit'),
        applied: num('applied'),
        lag: num('lag'),
        fields,
      });
    }
  }
  return groups;
}

/**
 * Checks of a report against the results document it came from: each datum a mark or cell carries
 * (data-pointer, data-value) must be the document's value at that JSON Pointer.
 */

/** The value at a JSON Pointer (RFC 6901), or undefined when the path does not exist. */
export function resolvePointer(doc: unknown, ptr: string): unknown {
  if (ptr === '') return doc;
  if (!ptr.startsWith('/')) return undefined;
  let node: unknown = doc;
  for (const raw of ptr.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node)) node = /^\d+$/.test(key) ? node[Number(key)] : undefined;
    else if (typeof node === 'object' && node !== null && Object.prototype.hasOwnProperty.call(node, key)) node = (node as Record<string, unknown>)[key];
    else return undefined;
  }
  return node;
}

export interface Datum {
  pointer: string;
  value: string;
  /** What carries it, for messages (chart name, tag). */
  where: string;
}

/**
 * The data whose value is not the document's at their pointer, as messages; empty when all agree.
 * A value of `null` stands for a number the document lacks (null, as a search with no rate).
 */
export function mismatches(doc: unknown, data: readonly Datum[]): string[] {
  const bad: string[] = [];
  for (const d of data) {
    const v = resolvePointer(doc, d.pointer);
    const ok = d.value === 'null' ? v === null || v === undefined : typeof v === 'number' ? Number(d.value) === v : typeof v === 'string' && d.value === v;
    if (!ok) bad.push(`${d.where} ${d.pointer}: page ${d.value}, document ${JSON.stringify(v)}`);
  }
  return bad;
}

const ENTITY: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'" };

/** Every (data-pointer, data-value) pair in report HTML, read from the text as a parser would. */
export function dataInHtml(html: string): Datum[] {
  const out: Datum[] = [];
  for (const m of html.matchAll(/<(\w+)\b[^>]*?\sdata-pointer="([^"]*)" data-value="([^"]*)"/g)) {
    const un = (s: string): string => s.replace(/&(amp|lt|gt|quot|#39);/g, (e) => ENTITY[e] ?? e);
    out.push({ where: m[1] as string, pointer: un(m[2] as string), value: un(m[3] as string) });
  }
  return out;
}

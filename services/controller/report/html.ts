/**
 * HTML and SVG text building for the report: every string that comes from a results document goes
 * through `esc`, in text and in attribute values alike, so a model name, counter name or error
 * message can never open a tag or end an attribute.
 */

/**
 * Where the report's text goes, piece by piece: a file, or an array joined into one string. The
 * page of a large sweep is several times its results.json; built as one string (from the ropes of
 * its parts) it took gigabytes, written piece by piece it takes what one piece takes.
 */
export type Out = (piece: string) => void;

/** The text `write` gives, as one string. */
export function collect(write: (out: Out) => void): string {
  const parts: string[] = [];
  write((p) => parts.push(p));
  return parts.join('');
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for an HTML or SVG text node or a quoted attribute value. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ENTITIES[c] ?? c);
}

/** A mark's machine-readable datum: rendered as data-* attributes (`{ op: 'unmap' }` -> data-op="unmap"). */
export type DataAttrs = Readonly<Record<string, string | number>>;

/**
 * Attribute names are ours, never the file's: letters, digits and dashes only (SVG has viewBox).
 * data-* names are lower case, as the HTML parser would make them.
 */
function attrName(name: string, lower = false): string {
  if (!(lower ? /^[a-z][a-z0-9-]*$/ : /^[a-zA-Z][a-zA-Z0-9-]*$/).test(name)) throw new Error(`bad attribute name "${name}"`);
  return name;
}

/** ` name="value"` for each attribute given (undefined ones left out), values escaped. */
export function attrs(a: Readonly<Record<string, string | number | undefined>>): string {
  let out = '';
  for (const [k, v] of Object.entries(a)) if (v !== undefined) out += ` ${attrName(k)}="${esc(String(v))}"`;
  return out;
}

/** ` data-name="value"` for each datum. */
export function dataAttrs(d: DataAttrs | undefined): string {
  if (!d) return '';
  let out = '';
  for (const [k, v] of Object.entries(d)) out += ` data-${attrName(k, true)}="${esc(String(v))}"`;
  return out;
}

/**
 * A JSON Pointer (RFC 6901) to a value of the results document: `/runs/3/ops/1/measuredUs/p99`.
 * Keys may hold dots and dashes (`topology.psmmus`, `psmmu-0`), which a dotted path would confuse.
 */
export function pointer(...parts: (string | number)[]): string {
  return parts.map((p) => '/' + String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}

/** The datum of a mark or cell: where its value is in the document, and the value (null when it has none). */
export function datum(at: string, value: number): DataAttrs {
  return { pointer: at, value: Number.isFinite(value) ? value : 'null' };
}

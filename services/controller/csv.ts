/**
 * CSV as RFC 4180 writes it: records end with CRLF; a field holding a comma, a double quote, a CR
 * or an LF is enclosed in double quotes, with each double quote inside doubled. Spreadsheets and
 * pandas read it as is.
 */
export type CsvValue = string | number;

const NEEDS_QUOTES = /[",\r\n]/;

export function csvField(v: CsvValue): string {
  const s = typeof v === 'number' ? (Number.isFinite(v) ? String(v) : '') : v;
  return NEEDS_QUOTES.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvRecord(fields: readonly CsvValue[]): string {
  return fields.map(csvField).join(',');
}

/** The records (the first one is the header), each ended by CRLF. */
export function toCsv(records: readonly (readonly CsvValue[])[]): string {
  return records.map((r) => csvRecord(r) + '\r\n').join('');
}

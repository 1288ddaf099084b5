/**
 * results.json is replaced atomically (a temporary file in the same folder, then a rename): a
 * reader in another process, polling while it is rewritten over and over, only ever reads a whole
 * document, old or new, and no temporary file is left behind.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../../services/controller/results.js';

const dir = mkdtempSync(join(tmpdir(), 'vmmsim-atomic-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A reader process: reads and parses the file until told to stop, then prints reads and failures. */
const READER = `
const { readFileSync } = require('node:fs');
const file = process.argv[1];
let reads = 0, torn = 0, stop = false;
process.on('message', () => { stop = true; });
(function loop() {
  for (let i = 0; i < 20 && !stop; i++) {
    try { JSON.parse(readFileSync(file, 'utf8')); reads++; } catch (e) { if (e.code !== 'ENOENT') torn++; }
  }
  if (stop) { process.send({ reads, torn }, () => process.exit(0)); return; }
  setImmediate(loop);
})();
`;

describe('writeFileAtomic', () => {
  it('never lets a concurrent reader see a partial document, and leaves no temporary file', async () => {
    // Big enough that an in-place write would be seen half done.
    const doc = (n: number): string => JSON.stringify({ n, pad: 'x'.repeat(2 * 1024 * 1024 + n) });
    writeFileAtomic(dir, 'results.json', doc(0));
    const reader = spawn(process.execPath, ['-e', READER, join(dir, 'results.json')], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const report = new Promise<{ reads: number; torn: number }>((resolve) => reader.once('message', (m: { reads: number; torn: number }) => resolve(m)));
    const exited = new Promise<number | null>((resolve) => reader.once('exit', resolve));
    await new Promise((r) => setTimeout(r, 100));
    for (let n = 1; n <= 60; n++) {
      writeFileAtomic(dir, 'results.json', doc(n));
      await new Promise((r) => setImmediate(r));
    }
    reader.send('stop');
    const { reads, torn } = await report;
    expect(await exited).toBe(0);
    expect(reads).toBeGreaterThan(0);
    expect(torn).toBe(0);
    expect(readdirSync(dir)).toEqual(['results.json']);
  });
});

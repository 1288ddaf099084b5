import { describe, expect, it } from 'vitest';
import { ConfigInvalidations } from '../../worker-pool/config-invalidations.js';

function recorder(): { got: [number, number][]; invalidateConfig: (first: number, count: number) => void } {
  const got: [number, number][] = [];
  return { got, invalidateConfig: (first, count) => void got.push([first, count]) };
}

describe('the CFGI log from the VCMDQ workers to the translator', () => {
  it('hands the reader every range a writer appended, oldest first, once', () => {
    const reader = ConfigInvalidations.create();
    const writer = ConfigInvalidations.attach(reader.buffer);
    expect(reader.pending).toBe(false);
    writer.invalidateConfig(0x100, 1);
    writer.invalidateConfig(0x108, 8);
    writer.invalidateConfig(0, 2 ** 32);
    expect(reader.pending).toBe(true);
    const r = recorder();
    reader.applyTo(r);
    expect(r.got).toEqual([[0x100, 1], [0x108, 8], [0, 2 ** 32]]);
    reader.applyTo(r);
    expect(r.got).toHaveLength(3);
    expect(reader.pending).toBe(false);
  });

  it('a reader that fell more than the log holds behind drops everything (always safe)', () => {
    const reader = ConfigInvalidations.create();
    const writer = ConfigInvalidations.attach(reader.buffer);
    for (let i = 0; i < 65; i++) writer.invalidateConfig(i, 1);
    const r = recorder();
    reader.applyTo(r);
    expect(r.got).toEqual([[0, 2 ** 32]]);
  });

  it('refuses a buffer that is not a log', () => {
    expect(() => ConfigInvalidations.attach(new SharedArrayBuffer(1024))).toThrow(TypeError);
  });
});

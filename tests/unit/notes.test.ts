import { describe, expect, it } from 'vitest';
import { loadProfile } from '../../services/cost/profile.js';
import { archNotes, notesBlock } from '../../services/controller/notes.js';
import { allDesigns } from '../../services/designs/registry.js';

describe('run notes', () => {
  it('note an arch mismatch for every design whose architecture is not the profile\'s, naming a profile that fits', () => {
    for (const name of ['arm64-kunpeng920', 'power9', 'x86-skylake']) {
      const profile = loadProfile(name);
      for (const d of allDesigns()) {
        const notes = archNotes(d.name, profile);
        if (d.traits.arch === profile.arch) {
          expect(notes, `${d.name} on ${name}`).toEqual([]);
          continue;
        }
        expect(notes, `${d.name} on ${name}`).toHaveLength(1);
        expect(notes[0]?.code).toBe('arch-mismatch');
        expect(notes[0]?.text).toContain(`${d.name} models ${d.traits.arch} hardware but profile ${name} prices ${profile.arch}:`);
        expect(loadProfile((/--profile (\S+)\)$/.exec(notes[0]?.text ?? '') ?? [])[1] ?? 'none').arch).toBe(d.traits.arch);
      }
    }
  });

  it('the sPAPR designs and intel-cm say so on the default profile; the arm64 designs do not', () => {
    const k = loadProfile('arm64-kunpeng920');
    const noted = allDesigns().filter((d) => archNotes(d.name, k).length > 0).map((d) => d.name).sort();
    expect(noted).toEqual(['intel-cm', 'spapr-tce', 'spapr-tce-kvm']);
  });

  it('wrap a long note to the tables\' 120 columns', () => {
    const text = archNotes('spapr-tce-kvm', loadProfile('arm64-phytium-s2500'))[0]?.text ?? '';
    const block = notesBlock([{ model: 'spapr-tce-kvm', notes: [{ code: 'arch-mismatch', text }] }]);
    const lines = block.split('\n').filter((l) => l !== '');
    expect(lines[0]).toBe('notes:');
    for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(120);
    expect(lines.slice(2).every((l) => l.startsWith('    '))).toBe(true);
    expect(lines.slice(1).map((l) => l.trim()).join(' ')).toBe(`arch-mismatch: ${text}`);
  });

  it('print each distinct note once under the table, and nothing when there is none', () => {
    const note = { code: 'arch-mismatch', text: 'spapr-tce models ppc64 hardware' };
    expect(notesBlock([{ model: 'none', notes: [] }])).toBe('');
    expect(notesBlock([{ model: 'spapr-tce', notes: [note] }, { model: 'spapr-tce', notes: [note] }])).toBe('\nnotes:\n  arch-mismatch: spapr-tce models ppc64 hardware\n');
  });
});

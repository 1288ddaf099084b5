import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseTrace, TraceParser, type TraceEvent, type TraceParse } from '../../services/guest/trace.js';

/** The sample lines of shared/reference/ftrace.md, in order. */
const SAMPLES = [
  '(udev-worker)-532 [010] ..... 4.878076: map: IOMMU: iova=0x00000000fe980000 - 0x00000000fea00000 paddr=0x000000010ec80000 size=524288',
  'kworker/u64:0-12 [011] ..... 327.747766: unmap: IOMMU: iova=0x00000000fe980000 - 0x00000000fea00000 size=524288 unmapped_size=524288',
  'irq/26-AMD-Vi-154 [006] ..... 327.753942: io_page_fault: IOMMU:ath12k_pci 0000:c2:00.0 iova=0x00000000fe980000 flags=0x0001',
  'gem_exec_gttfil-1010 [004] .N... 50.126420: map: IOMMU: iova=0x00003fffffc00000 - 0x0000400000000000 paddr=0x00000001b9400000 size=4194304',
  'qemu-kvm-4575 [008] ....... 438.308478: unmap: IOMMU: iova=0x0000000000000000 - 0x0000000000001000 size=4096 unmapped_size=4096',
  'qemu-kvm-4575 [008] ....... 438.308514: map: IOMMU: iova=0x0000000000000000 - 0x00000000000c0000 paddr=0x00000001a6800000 size=786432',
  'map: IOMMU: iova=0x0000000ffff36000 paddr=0x00000001164d8000 size=4096',
] as const;

const NONE: TraceParse['skipped'] = { header: 0, blank: 0, otherIommuEvent: 0, otherEvent: 0, unparsable: 0 };

function one(line: string): TraceEvent | undefined {
  const r = parseTrace(line);
  return r.events.length === 1 ? r.events[0] : undefined;
}

function skippedOf(text: string): TraceParse['skipped'] {
  return parseTrace(text).skipped;
}

function streamed(lines: readonly string[]): TraceParse {
  const p = new TraceParser();
  for (const l of lines) p.push(l);
  return p.finish();
}

describe('ftrace.md sample lines', () => {
  it('map with range end, comm in parentheses', () => {
    expect(one(SAMPLES[0])).toStrictEqual({
      t: 0,
      op: 'map',
      iova: 0xfe980000,
      size: 524288,
      paddr: 0x10ec80000,
      cpu: 10,
      comm: '(udev-worker)',
      pid: 532,
      line: 1,
    });
  });

  it('unmap with range end, comm with slash and colon', () => {
    expect(one(SAMPLES[1])).toStrictEqual({
      t: 0,
      op: 'unmap',
      iova: 0xfe980000,
      size: 524288,
      unmappedSize: 524288,
      cpu: 11,
      comm: 'kworker/u64:0',
      pid: 12,
      line: 1,
    });
  });

  it('io_page_fault is another iommu event', () => {
    const r = parseTrace(SAMPLES[2]);
    expect(r.events).toEqual([]);
    expect(r.skipped).toStrictEqual({ ...NONE, otherIommuEvent: 1 });
  });

  it('map with .N... flags ending at 2^46', () => {
    expect(one(SAMPLES[3])).toStrictEqual({
      t: 0,
      op: 'map',
      iova: 0x3fffffc00000,
      size: 4194304,
      paddr: 0x1b9400000,
      cpu: 4,
      comm: 'gem_exec_gttfil',
      pid: 1010,
      line: 1,
    });
  });

  it('unmap at IOVA 0 with ....... flags, comm with a dash', () => {
    expect(one(SAMPLES[4])).toStrictEqual({
      t: 0,
      op: 'unmap',
      iova: 0,
      size: 4096,
      unmappedSize: 4096,
      cpu: 8,
      comm: 'qemu-kvm',
      pid: 4575,
      line: 1,
    });
  });

  it('map at IOVA 0', () => {
    expect(one(SAMPLES[5])).toStrictEqual({
      t: 0,
      op: 'map',
      iova: 0,
      size: 786432,
      paddr: 0x1a6800000,
      cpu: 8,
      comm: 'qemu-kvm',
      pid: 4575,
      line: 1,
    });
  });

  it('bare map of an older kernel: no prefix, no timestamp, no range end', () => {
    expect(one(SAMPLES[6])).toStrictEqual({ t: 0, op: 'map', iova: 0xffff36000, size: 4096, paddr: 0x1164d8000, line: 1 });
  });

  it('all of them together: relative, sorted, the bare line takes the previous time', () => {
    const r = parseTrace(SAMPLES.join('\n') + '\n');
    expect(r.skipped).toStrictEqual({ ...NONE, otherIommuEvent: 1 });
    expect(r.unparsableSamples).toEqual([]);
    expect(r.events.map((e) => [e.line, e.op, e.t])).toEqual([
      [1, 'map', 0],
      [4, 'map', 45.248344],
      [2, 'unmap', 322.86969],
      [5, 'unmap', 433.430402],
      [6, 'map', 433.430438],
      [7, 'map', 433.430438],
    ]);
  });
});

describe('other forms', () => {
  it('perf script iommu:map: / iommu:unmap:', () => {
    const r = parseTrace(
      [
        '        qemu-kvm  4575 [008]   438.308514: iommu:map: IOMMU: iova=0x0000000000000000 - 0x00000000000c0000 paddr=0x00000001a6800000 size=786432',
        '        qemu-kvm  4575/4580 [009]   438.308600: iommu:unmap: IOMMU: iova=0x0000000000000000 - 0x00000000000c0000 size=786432 unmapped_size=786432',
        '     Web Content 31337 [001]   438.308700: iommu:map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=4096',
      ].join('\n'),
    );
    expect(r.skipped).toStrictEqual(NONE);
    expect(r.events).toStrictEqual([
      { t: 0, op: 'map', iova: 0, size: 786432, paddr: 0x1a6800000, cpu: 8, comm: 'qemu-kvm', pid: 4575, line: 1 },
      {
        t: 0.000086,
        op: 'unmap',
        iova: 0,
        size: 786432,
        unmappedSize: 786432,
        cpu: 9,
        comm: 'qemu-kvm',
        pid: 4575,
        line: 2,
      },
      { t: 0.000186, op: 'map', iova: 0x1000, size: 4096, paddr: 0x2000, cpu: 1, comm: 'Web Content', pid: 31337, line: 3 },
    ]);
  });

  it('dev=NAME token, with and without range end', () => {
    const r = parseTrace(
      [
        'vfio-pci-900 [002] ..... 10.000000: map: IOMMU: dev=0000:01:00.0 iova=0x00000000ffff0000 - 0x00000000ffff2000 paddr=0x0000000080000000 size=8192',
        'vfio-pci-900 [002] ..... 10.000010: unmap: IOMMU: dev=0000:01:00.0 iova=0x00000000ffff0000 size=8192 unmapped_size=8192',
        'map: IOMMU: dev=mlx5_core iova=0x0000000000010000 paddr=0x0000000000020000 size=4096',
      ].join('\n'),
    );
    expect(r.skipped).toStrictEqual(NONE);
    expect(r.events).toStrictEqual([
      {
        t: 0,
        op: 'map',
        iova: 0xffff0000,
        size: 8192,
        paddr: 0x80000000,
        device: '0000:01:00.0',
        cpu: 2,
        comm: 'vfio-pci',
        pid: 900,
        line: 1,
      },
      {
        t: 0.00001,
        op: 'unmap',
        iova: 0xffff0000,
        size: 8192,
        unmappedSize: 8192,
        device: '0000:01:00.0',
        cpu: 2,
        comm: 'vfio-pci',
        pid: 900,
        line: 2,
      },
      { t: 0.00001, op: 'map', iova: 0x10000, size: 4096, paddr: 0x20000, device: 'mlx5_core', line: 3 },
    ]);
  });

  it('old kernels: unmap without range end', () => {
    expect(
      one('kworker/0:1-10 [000] .... 1.000000: unmap: IOMMU: iova=0x00000000fffff000 size=4096 unmapped_size=4096'),
    ).toStrictEqual({ t: 0, op: 'unmap', iova: 0xfffff000, size: 4096, unmappedSize: 4096, cpu: 0, comm: 'kworker/0:1', pid: 10, line: 1 });
  });

  it('unmapped_size may differ from size, and be 0 (nothing was mapped there)', () => {
    expect(one('unmap: IOMMU: iova=0x1000 size=4096 unmapped_size=0')).toMatchObject({ size: 4096, unmappedSize: 0 });
    expect(one('unmap: IOMMU: iova=0x200000 size=4096 unmapped_size=2097152')).toMatchObject({
      size: 4096,
      unmappedSize: 2097152,
    });
  });

  it('is liberal with whitespace, CRLF, the flags column, tgid and <...> comms', () => {
    const lines = [
      '          <idle>-0       [000] d.h1.    1.000000: map: IOMMU: iova=0x1000 - 0x2000 paddr=0x5000 size=4096',
      'bash-1977  (1977) [003] ....  1.000001:   map:   IOMMU:iova=0x1000\t-\t0x2000   paddr=0x5000\tsize=4096   ',
      '<...>-4242 (-----) [001] 1.000002: map: IOMMU: iova=0x1000 paddr=0x5000 size=4096\r',
      'kthr-7 [002] 1.000003: unmap: IOMMU: iova=0x1000 size=4096 unmapped_size=4096',
      '\tmap:IOMMU:iova=0x1000 paddr=0x5000 size=4096',
      'x-1 [000] dNs2. 1.000004: map: IOMMU: iova=0xABCdef000 - 0xabcdf0000 paddr=0x5000 size=4096',
    ];
    const r = parseTrace(lines.join('\r\n'));
    expect(r.skipped).toStrictEqual(NONE);
    expect(r.events.map((e) => [e.comm, e.pid, e.cpu, e.op, e.iova])).toEqual([
      ['<idle>', 0, 0, 'map', 0x1000],
      ['bash', 1977, 3, 'map', 0x1000],
      ['<...>', 4242, 1, 'map', 0x1000],
      ['kthr', 7, 2, 'unmap', 0x1000],
      [undefined, undefined, undefined, 'map', 0x1000],
      ['x', 1, 0, 'map', 0xabcdef000],
    ]);
    // Nanosecond timestamps are read too.
    expect(one('a-1 [000] 7.123456789: map: IOMMU: iova=0x1000 paddr=0x5000 size=4096')?.t).toBe(0);
    expect(
      parseTrace(
        'a-1 [000] 7.000000001: map: IOMMU: iova=0x1000 paddr=0x5000 size=4096\na-1 [000] 7.000000002: map: IOMMU: iova=0x1000 paddr=0x5000 size=4096',
      ).events.map((e) => e.t),
    ).toEqual([0, 1e-9]);
  });
});

describe('skipped lines', () => {
  it('counts headers, blanks, other iommu events and other systems in their buckets', () => {
    const text = [
      '# tracer: nop',
      '#',
      '#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION',
      '   # indented comment',
      'cpus=16',
      'version = 6',
      'CPU 3 is empty',
      'CPU:5 [LOST 1234 EVENTS]',
      '',
      '    ',
      '\t',
      'systemd-udevd-412 [000] ..... 3.201544: add_device_to_group: IOMMU: groupID=14 device=0000:01:00.0',
      'systemd-udevd-412 [000] ..... 3.201561: attach_device_to_domain: IOMMU: device=0000:01:00.0',
      'irq/26-AMD-Vi-154 [006] ..... 327.753942: io_page_fault: IOMMU:ath12k_pci 0000:c2:00.0 iova=0x00000000fe980000 flags=0x0001',
      'perf 1 [000] 1.0: iommu:io_page_fault: IOMMU:mlx5_core 0000:01:00.0 iova=0x0000000000001000 flags=0x0000',
      'detach_device_from_domain: IOMMU: device=0000:01:00.0',
      '<idle>-0 [000] d.h1. 12.000012: irq_handler_entry: irq=45 name=mlx5_comp0',
      '<idle>-0 [000] d.h1. 12.000020: irq_handler_exit: irq=45 ret=handled',
      'iperf3-2211 [000] ..... 12.000031: dma_map_page: 0000:01:00.0 dir=TO_DEVICE dma_addr=fffff000 size=4096',
      'perf 1 [000] 12.000040: dma:dma_unmap_page: 0000:01:00.0 dir=TO_DEVICE dma_addr=fffff000 size=4096',
      'perf 1 [000] 12.000050: irq:irq_handler_entry: irq=45 name=mlx5_comp0',
    ].join('\n');
    const r = parseTrace(text);
    expect(r.events).toEqual([]);
    expect(r.skipped).toStrictEqual({ header: 8, blank: 3, otherIommuEvent: 5, otherEvent: 5, unparsable: 0 });
    expect(r.unparsableSamples).toEqual([]);
  });

  it('a final newline is not a blank line, but an empty line before it is', () => {
    expect(skippedOf('')).toStrictEqual(NONE);
    expect(skippedOf('\n')).toStrictEqual({ ...NONE, blank: 1 });
    expect(skippedOf('# a\n\n')).toStrictEqual({ ...NONE, header: 1, blank: 1 });
  });

  it('counts garbage as unparsable, samples the first ten with line numbers', () => {
    const lines: string[] = [SAMPLES[0]];
    for (let i = 0; i < 12; i++) lines.push(`garbage ${i} %%%`);
    lines.push('hello: world'); // a bare `word:` line that is no iommu event
    const r = parseTrace(lines.join('\n'));
    expect(r.events).toHaveLength(1);
    expect(r.skipped).toStrictEqual({ ...NONE, unparsable: 13 });
    expect(r.unparsableSamples).toHaveLength(10);
    expect(r.unparsableSamples[0]).toStrictEqual({ line: 2, text: 'garbage 0 %%%' });
    expect(r.unparsableSamples[9]).toStrictEqual({ line: 11, text: 'garbage 9 %%%' });
  });

  it('cuts long sample text', () => {
    const r = parseTrace('x'.repeat(10_000));
    expect(r.skipped.unparsable).toBe(1);
    expect(r.unparsableSamples[0]?.text.length).toBeLessThanOrEqual(257);
  });

  const P = 'a-1 [000] ..... 1.000000: ';
  it.each([
    ['range end disagrees with size', `${P}map: IOMMU: iova=0x1000 - 0x3000 paddr=0x5000 size=4096`],
    ['range end disagrees with size (unmap)', `${P}unmap: IOMMU: iova=0x1000 - 0x1fff size=4096 unmapped_size=4096`],
    ['size 0', `${P}map: IOMMU: iova=0x1000 paddr=0x5000 size=0`],
    ['size 0 (unmap)', `${P}unmap: IOMMU: iova=0x1000 size=0 unmapped_size=0`],
    ['hex without 0x', `${P}map: IOMMU: iova=fe980000 paddr=0x5000 size=4096`],
    ['hex size', `${P}map: IOMMU: iova=0x1000 paddr=0x5000 size=0x1000`],
    ['negative size', `${P}map: IOMMU: iova=0x1000 paddr=0x5000 size=-4096`],
    ['signed size', `${P}map: IOMMU: iova=0x1000 paddr=0x5000 size=+4096`],
    ['bad hex digit', `${P}map: IOMMU: iova=0x10g0 paddr=0x5000 size=4096`],
    ['empty hex', `${P}map: IOMMU: iova=0x paddr=0x5000 size=4096`],
    ['IOVA above 2^53', `${P}map: IOMMU: iova=0x0020000000000000 paddr=0x5000 size=4096`],
    ['range ending above 2^53', `${P}map: IOMMU: iova=0x001ffffffffff000 paddr=0x5000 size=8192`],
    ['paddr above 2^53', `${P}map: IOMMU: iova=0x1000 paddr=0xffffffffffffffff size=4096`],
    ['size above 2^53', `${P}unmap: IOMMU: iova=0x0 size=18446744073709551615 unmapped_size=0`],
    ['missing paddr', `${P}map: IOMMU: iova=0x1000 size=4096`],
    ['unmap fields on a map', `${P}map: IOMMU: iova=0x1000 size=4096 unmapped_size=4096`],
    ['missing unmapped_size', `${P}unmap: IOMMU: iova=0x1000 size=4096`],
    ['trailing junk', `${P}map: IOMMU: iova=0x1000 paddr=0x5000 size=4096 extra`],
    ['missing IOMMU: tag', `${P}map: iova=0x1000 paddr=0x5000 size=4096`],
    ['fields out of order', `${P}map: IOMMU: paddr=0x5000 iova=0x1000 size=4096`],
    ['timestamp without fraction', 'a-1 [000] ..... 12: map: IOMMU: iova=0x1000 paddr=0x5000 size=4096'],
  ])('%s is unparsable', (_name, line) => {
    const r = parseTrace(line);
    expect(r.events).toEqual([]);
    expect(r.skipped).toStrictEqual({ ...NONE, unparsable: 1 });
    expect(r.unparsableSamples).toStrictEqual([{ line: 1, text: line }]);
  });

  it('accepts the largest exact range: ending exactly at 2^53', () => {
    expect(one(`${P}map: IOMMU: iova=0x001ffffffffff000 - 0x0020000000000000 paddr=0x5000 size=4096`)).toMatchObject({
      iova: 2 ** 53 - 4096,
      size: 4096,
    });
  });
});

describe('times', () => {
  const ev = (ts: string, iova: number): string =>
    `c-1 [000] ..... ${ts}: map: IOMMU: iova=0x${iova.toString(16)} paddr=0x0 size=4096`;

  it('relative to the earliest timestamp, sorted, ties in line order', () => {
    const r = parseTrace(
      [
        ev('100.000500', 0x1000), // 1
        ev('100.000200', 0x2000), // 2: another CPU's buffer, earlier
        ev('100.000500', 0x3000), // 3: tie with line 1
        ev('100.000300', 0x4000), // 4
        ev('100.000200', 0x5000), // 5: tie with line 2
      ].join('\n'),
    );
    expect(r.events.map((e) => [e.line, e.t])).toEqual([
      [2, 0],
      [5, 0],
      [4, 0.0001],
      [1, 0.0003],
      [3, 0.0003],
    ]);
  });

  it('untimestamped events take the previous event in line order, 0 before any', () => {
    const bare = (iova: number): string => `map: IOMMU: iova=0x${iova.toString(16)} paddr=0x0 size=4096`;
    const r = parseTrace(
      [
        bare(0x1000), // 1: nothing before: 0
        ev('5.000000', 0x2000), // 2
        ev('3.000000', 0x3000), // 3: the earliest, the base
        bare(0x4000), // 4: takes 3.0 from line 3
        ev('9.000000', 0x5000), // 5
        'garbage', // 6
        bare(0x6000), // 7: takes 9.0 from line 5 (garbage is no event)
      ].join('\n'),
    );
    expect(r.events.map((e) => [e.line, e.t])).toEqual([
      [1, 0],
      [3, 0],
      [4, 0],
      [2, 2],
      [5, 6],
      [7, 6],
    ]);
  });

  it('a trace without any timestamp is all at 0, in line order', () => {
    const r = parseTrace([SAMPLES[6], SAMPLES[6], SAMPLES[6]].join('\n'));
    expect(r.events.map((e) => [e.line, e.t])).toEqual([
      [1, 0],
      [2, 0],
      [3, 0],
    ]);
  });

  it('large uptimes keep microsecond differences exact', () => {
    const r = parseTrace([ev('31536000.000001', 0x1000), ev('31536000.000002', 0x1000)].join('\n'));
    expect(r.events.map((e) => e.t)).toEqual([0, 0.000001]);
  });
});

describe('scenarios/traces/sample.trace', () => {
  const text = readFileSync(new URL('../../scenarios/traces/sample.trace', import.meta.url), 'utf8');
  const r = parseTrace(text);

  it('parses completely into the expected buckets', () => {
    expect(r.skipped).toStrictEqual({ header: 12, blank: 0, otherIommuEvent: 5, otherEvent: 2, unparsable: 0 });
    expect(r.events).toHaveLength(20);
    expect(new Set(r.events.map((e) => e.cpu))).toEqual(new Set([0, 1]));
    expect(r.events.every((e) => e.size === 4096)).toBe(true);
  });

  it('is in time order already, tens of microseconds apart', () => {
    const lines = r.events.map((e) => e.line);
    expect(lines).toEqual([...lines].sort((a, b) => a - b));
    for (let i = 1; i < r.events.length; i++) {
      const gap = (r.events[i]?.t ?? 0) - (r.events[i - 1]?.t ?? 0);
      expect(gap).toBeGreaterThan(5e-6);
      expect(gap).toBeLessThan(1e-4);
    }
  });

  it('unmaps every map later, with the same IOVA and size', () => {
    const open = new Map<number, number>();
    for (const e of r.events) {
      if (e.op === 'map') {
        expect(open.has(e.iova)).toBe(false);
        open.set(e.iova, e.size);
      } else {
        expect(open.get(e.iova)).toBe(e.size);
        expect(e.unmappedSize).toBe(e.size);
        open.delete(e.iova);
      }
    }
    expect(open.size).toBe(0);
  });
});

// ---- properties ----

interface Spec {
  op: 'map' | 'unmap';
  iova: bigint;
  size: bigint;
  paddr: bigint;
  unmapped: bigint;
  dev: string | undefined;
  form: 'ftrace' | 'perf' | 'bare';
  range: boolean;
  seconds: number;
  micros: number;
  cpu: number;
  comm: string;
  pid: number;
  flags: string;
  pad: string;
}

const hex = (v: bigint): string => `0x${v.toString(16).padStart(16, '0')}`;

const specArb: fc.Arbitrary<Spec> = fc
  .record({
    op: fc.constantFrom('map' as const, 'unmap' as const),
    iova: fc.bigInt({ min: 0n, max: 2n ** 53n - 1n }),
    size: fc.bigInt({ min: 1n, max: 2n ** 40n }),
    paddr: fc.bigInt({ min: 0n, max: 2n ** 53n - 1n }),
    unmapped: fc.bigInt({ min: 0n, max: 2n ** 40n }),
    dev: fc.option(fc.stringMatching(/^[0-9a-z_:.]{1,16}$/), { nil: undefined }),
    form: fc.constantFrom('ftrace' as const, 'perf' as const, 'bare' as const),
    range: fc.boolean(),
    seconds: fc.integer({ min: 0, max: 100_000_000 }),
    micros: fc.integer({ min: 0, max: 999_999 }),
    cpu: fc.integer({ min: 0, max: 511 }),
    comm: fc.stringMatching(/^[a-zA-Z<(][\w/:.()<>-]{0,14}$/),
    pid: fc.integer({ min: 0, max: 4_194_304 }),
    flags: fc.constantFrom('', '.....', '.N...', '.......', 'd.h1.', '....'),
    pad: fc.constantFrom(' ', '  ', '\t', '   '),
  })
  .filter((s) => s.iova + s.size <= 2n ** 53n);

function format(s: Spec): string {
  const dev = s.dev === undefined ? '' : `dev=${s.dev} `;
  const range = s.range ? `${s.pad}-${s.pad}${hex(s.iova + s.size)}` : '';
  const body =
    s.op === 'map'
      ? `IOMMU: ${dev}iova=${hex(s.iova)}${range} paddr=${hex(s.paddr)}${s.pad}size=${s.size}`
      : `IOMMU: ${dev}iova=${hex(s.iova)}${range} size=${s.size}${s.pad}unmapped_size=${s.unmapped}`;
  const ts = `${s.seconds}.${String(s.micros).padStart(6, '0')}`;
  const cpu = `[${String(s.cpu).padStart(3, '0')}]`;
  switch (s.form) {
    case 'bare':
      return `${s.op}: ${body}`;
    case 'perf':
      return `${s.pad}${s.comm} ${s.pid} ${cpu}${s.pad}${ts}: iommu:${s.op}: ${body}`;
    case 'ftrace':
      return `${s.pad}${s.comm}-${s.pid}${s.pad}${cpu} ${s.flags}${s.pad}${ts}: ${s.op}: ${body}`;
  }
}

function expected(s: Spec, line: number): Omit<TraceEvent, 't'> {
  const e: Omit<TraceEvent, 't'> = { op: s.op, iova: Number(s.iova), size: Number(s.size), line };
  if (s.op === 'map') e.paddr = Number(s.paddr);
  else e.unmappedSize = Number(s.unmapped);
  if (s.dev !== undefined) e.device = s.dev;
  if (s.form !== 'bare') Object.assign(e, { cpu: s.cpu, comm: s.comm, pid: s.pid });
  return e;
}

const otherLineArb = fc.constantFrom(
  '# tracer: nop',
  '#',
  '',
  '   ',
  SAMPLES[2],
  'systemd-udevd-412 [000] ..... 3.201561: attach_device_to_domain: IOMMU: device=0000:01:00.0',
  '<idle>-0 [000] d.h1. 12.000012: irq_handler_entry: irq=45 name=mlx5_comp0',
  'perf 1 [000] 12.000040: dma:dma_unmap_page: 0000:01:00.0 dir=TO_DEVICE dma_addr=fffff000 size=4096',
);

/** Garbage without newlines (a line of the input cannot contain one). */
const garbageArb = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 120 }),
  fc.string({ unit: 'grapheme-ascii', maxLength: 120 }),
  // Near-misses: a valid line with one character replaced.
  fc
    .tuple(specArb, fc.nat(), fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }))
    .map(([s, i, c]) => {
      const l = format(s);
      const at = i % l.length;
      return l.slice(0, at) + c + l.slice(at + 1);
    }),
).map((s) => s.replace(/\n/g, ' '));

type Mixed = { kind: 'event'; spec: Spec } | { kind: 'other'; text: string };
const mixedArb: fc.Arbitrary<Mixed[]> = fc.array(
  fc.oneof(
    specArb.map((spec): Mixed => ({ kind: 'event', spec })),
    otherLineArb.map((text): Mixed => ({ kind: 'other', text })),
    garbageArb.map((text): Mixed => ({ kind: 'other', text })),
  ),
  { maxLength: 40 },
);
const textOf = (m: Mixed): string => (m.kind === 'event' ? format(m.spec) : m.text);

function checkInvariants(r: TraceParse, lines: number): void {
  let prev = 0;
  for (const e of r.events) {
    expect(Number.isFinite(e.t)).toBe(true);
    expect(e.t).toBeGreaterThanOrEqual(prev);
    prev = e.t;
    expect(Number.isSafeInteger(e.iova) && Number.isSafeInteger(e.size) && e.size > 0).toBe(true);
    expect(e.line >= 1 && e.line <= lines).toBe(true);
  }
  const s = r.skipped;
  expect(r.events.length + s.header + s.blank + s.otherIommuEvent + s.otherEvent + s.unparsable).toBe(lines);
  expect(r.unparsableSamples).toHaveLength(Math.min(10, s.unparsable));
}

describe('properties', () => {
  it('every generated valid line parses to exactly its fields', () => {
    fc.assert(
      fc.property(specArb, (s) => {
        const r = parseTrace(format(s));
        expect(r.skipped).toStrictEqual(NONE);
        expect(r.events).toStrictEqual([{ t: 0, ...expected(s, 1) }]);
      }),
      { numRuns: 500 },
    );
  });

  it('streaming and whole-text parse agree on mixes of valid, other and garbage lines', () => {
    fc.assert(
      fc.property(mixedArb, fc.boolean(), (mixed, crlf) => {
        const lines = mixed.map(textOf);
        const text = lines.map((l) => l + (crlf ? '\r\n' : '\n')).join('');
        const whole = parseTrace(text);
        // A streaming reader hands over what lies between newlines, a CR of CRLF included (a
        // line's own trailing CR and that of CRLF are the same bytes to it).
        const stream = streamed(text.split('\n').slice(0, -1));
        expect(stream).toStrictEqual(whole);
        checkInvariants(whole, lines.length);
        // Every generated valid line is among the events with its own fields.
        const byLine = new Map(whole.events.map((e) => [e.line, e]));
        mixed.forEach((m, i) => {
          if (m.kind !== 'event') return;
          const { t: _t, ...rest } = byLine.get(i + 1) ?? { t: -1 };
          expect(rest).toStrictEqual(expected(m.spec, i + 1));
        });
        // The earliest timestamped event is at 0.
        if (mixed.some((m) => m.kind === 'event' && m.spec.form !== 'bare')) expect(whole.events[0]?.t).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on random input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 2000 }), (text) => {
        const r = parseTrace(text);
        const lines = text === '' ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
        checkInvariants(r, lines);
      }),
      { numRuns: 1000 },
    );
    fc.assert(
      fc.property(fc.array(garbageArb, { maxLength: 30 }), (lines) => {
        const p = new TraceParser();
        for (const l of lines) p.push(l);
        checkInvariants(p.finish(), lines.length);
      }),
      { numRuns: 500 },
    );
  });

  it('stays fast on pathological lines', () => {
    const start = performance.now();
    parseTrace(' '.repeat(200_000) + '1.0' + ' '.repeat(200_000));
    parseTrace('a' + ' '.repeat(200_000) + 'b 1.0: map: IOMMU: iova=0x1000 paddr=0x0 size=4096');
    parseTrace(`map: IOMMU: dev=${'x'.repeat(200_000)} iova=${'0x1'.repeat(50_000)}`);
    parseTrace('['.repeat(100_000) + '1] 1.0: map: IOMMU: iova=0x1000 paddr=0x0 size=4096');
    expect(performance.now() - start).toBeLessThan(2000);
  });
});

import { EVENT, encodeEvent } from '../formats/smmu/structures.js';

const NAMES = new Map<number, string>(Object.entries(EVENT).map(([k, v]) => [v, k]));

/**
 * The SMMU's event queue: 32-byte records of faults and configuration errors. Keeps the most recent
 * records (as a full hardware queue would drop new ones, this keeps counting every event by type).
 */
export class EventQueue {
  private readonly ring: Buffer[] = [];
  readonly byType = new Map<string, number>();
  total = 0;

  constructor(private readonly capacity = 256) {}

  record(type: number, sid: number, inputAddr: number, stage2: boolean): void {
    this.total += 1;
    const name = NAMES.get(type) ?? `0x${type.toString(16)}`;
    this.byType.set(name, (this.byType.get(name) ?? 0) + 1);
    if (this.ring.length >= this.capacity) this.ring.shift();
    this.ring.push(encodeEvent(type, sid, inputAddr, stage2));
  }

  counters(): Record<string, number> {
    const out: Record<string, number> = { events: this.total };
    for (const [k, v] of this.byType) out[`event.${k}`] = v;
    return out;
  }
}

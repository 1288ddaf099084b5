import { Errno } from '../common/errors.js';
import type { Envelope__Output } from '../common/generated/vmmsim/v1/Envelope.js';
import type { OpContext } from '../common/op-context.js';
import { EMPTY, type HandlerResult, type RoleEnv, type RoleInstance } from '../common/role-api.js';
import { CMD_SIZE } from '../common/smmu/commands.js';
import type { Endpoint } from '../common/topology.js';
import { PhysicalCmdq } from './cmdq.js';
import { Iotlb } from './iotlb.js';

/** Main CMDQ size (Linux asks for the largest the SMMU offers; 2^8 here keeps wrap-around frequent). */
const CMDQ_LOG2 = 8;
const IOTLB_ENTRIES = 2048;

/** psmmu-K: one physical SMMUv3 with its command queue and IOTLB. */
class PsmmuRole implements RoleInstance {
  private readonly iotlb = new Iotlb(IOTLB_ENTRIES);
  private readonly cmdq = new PhysicalCmdq(CMDQ_LOG2, this.iotlb);
  private readonly counters = { submissions: 0, commands: 0, syncs: 0, errors: 0 };

  constructor(_env: RoleEnv) {}

  async handle(req: Envelope__Output, ctx: OpContext, from: Endpoint): Promise<HandlerResult> {
    if (req.kind !== 'CMDQ_SUBMIT' || from.role !== 'vfio') return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
    if (req.payload.length === 0 || req.payload.length % CMD_SIZE !== 0) return { status: -Errno.EINVAL, payload: EMPTY };
    this.counters.submissions += 1;
    if (this.cmdq.halted || !this.cmdq.write(req.payload)) return { status: -Errno.EIO, payload: consReg(this.cmdq.cons) };
    const r = this.cmdq.consume();
    ctx.charge('smmu.cmd_exec', r.executed);
    ctx.charge('smmu.sync', r.syncs);
    this.counters.commands += r.executed;
    this.counters.syncs += r.syncs;
    if (r.error) {
      this.counters.errors += 1;
      return { status: -Errno.EIO, payload: consReg(this.cmdq.cons) };
    }
    return { status: 0, payload: consReg(this.cmdq.cons) };
  }

  stats(): Record<string, number> {
    return {
      ...this.counters,
      iotlbEntries: this.iotlb.size,
      iotlbInvalidated: this.iotlb.invalidated,
    };
  }
}

/** The CONS register value a submitter reads back. */
function consReg(cons: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(cons >>> 0);
  return b;
}

export function createRole(env: RoleEnv): RoleInstance {
  return new PsmmuRole(env);
}

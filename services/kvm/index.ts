import { Errno } from '../common/errors.js';
import type { Envelope__Output } from '../common/generated/vmmsim/v1/Envelope.js';
import { decodeMmio } from '../common/kvm-run.js';
import type { OpContext } from '../common/op-context.js';
import { EMPTY, type HandlerResult, type RoleEnv, type RoleInstance } from '../common/role-api.js';
import type { Endpoint } from '../common/topology.js';

/**
 * kvm: the host kernel's KVM. A trapped guest MMIO write that no in-kernel device claims returns
 * from KVM_RUN to the VM's VMM as KVM_EXIT_MMIO, which is how every vSMMU register write travels.
 */
class KvmRole implements RoleInstance {
  private exits = 0;
  private userExits = 0;

  constructor(_env: RoleEnv) {}

  async handle(req: Envelope__Output, ctx: OpContext, from: Endpoint): Promise<HandlerResult> {
    if (req.kind !== 'MMIO_WRITE' || from.role !== 'guest') return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
    this.exits += 1;
    ctx.charge('exit.mmio_trap');
    if (!decodeMmio(req.payload)) return { status: -Errno.EINVAL, payload: EMPTY };
    this.userExits += 1;
    const r = await ctx.call(`qemu-${from.index}`, 'MMIO_EXIT', req.payload, req.guestMemory);
    return { status: r.status, payload: r.payload, guestMemory: r.guestMemory };
  }

  stats(): Record<string, number> {
    return { exits: this.exits, userExits: this.userExits };
  }
}

export function createRole(env: RoleEnv): RoleInstance {
  return new KvmRole(env);
}

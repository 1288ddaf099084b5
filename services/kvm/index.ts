import { Errno } from '../runtime/errors.js';
import { decodeMmio } from '../formats/kvm-run.js';
import type { OpContext } from '../runtime/op-context.js';
import { EMPTY, type HandlerResult, type RoleEnv, type RoleInstance, type Request } from '../runtime/role-api.js';
import type { Endpoint } from '../runtime/topology.js';
import { designOf } from '../designs/registry.js';
import type { KvmDevice, KvmDeviceFactory } from './device.js';

/**
 * kvm: the host kernel's KVM. A trapped guest MMIO write or hypercall is first offered to what the
 * architecture put in the kernel (an ioeventfd handler, in-kernel hypercalls); anything left returns
 * from KVM_RUN to the VM's VMM (KVM_EXIT_MMIO, KVM_EXIT_PAPR_HCALL).
 */
class KvmRole implements RoleInstance {
  private readonly device: KvmDevice | undefined;
  private readonly counters = { exits: 0, userExits: 0, inKernel: 0, hcalls: 0, migrations: 0, mmioReads: 0 };

  constructor(env: RoleEnv, kvmDevice: KvmDeviceFactory | undefined) {
    this.device = kvmDevice?.(env);
  }

  async handle(req: Request, ctx: OpContext, from: Endpoint): Promise<HandlerResult> {
    if (from.role !== 'guest') return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
    const vm = from.index;
    if (req.kind === 'MMIO_WRITE') {
      this.counters.exits += 1;
      ctx.charge('exit.mmio_trap');
      const access = decodeMmio(req.payload);
      if (!access) return { status: -Errno.EINVAL, payload: EMPTY };
      const mine = await this.device?.mmio?.(access, req, ctx, vm);
      if (mine) {
        this.counters.inKernel += 1;
        return mine;
      }
      return this.toUser(`qemu-${vm}`, 'MMIO_EXIT', req, ctx);
    }
    if (req.kind === 'MMIO_READ') {
      // io_mem_abort: a read goes to kvm_io_bus_read, where only in-kernel devices (the vGIC) sit;
      // an ioeventfd takes writes alone. A vIOMMU register read therefore returns from KVM_RUN with
      // KVM_EXIT_MMIO (is_write 0), and KVM completes the load with the VMM's data on re-entry
      // (kvm_handle_mmio_return): the same crossings as a write, both ways. A design that puts a
      // reader on the bus (an in-kernel vSMMU queue's CMDQ_CONS, exploration) serves it here.
      this.counters.exits += 1;
      this.counters.mmioReads += 1;
      ctx.charge('exit.mmio_trap');
      const access = decodeMmio(req.payload);
      if (!access || access.isWrite) return { status: -Errno.EINVAL, payload: EMPTY };
      const mine = await this.device?.mmioRead?.(access, req, ctx, vm);
      if (mine) {
        this.counters.inKernel += 1;
        return mine;
      }
      return this.toUser(`qemu-${vm}`, 'MMIO_EXIT', req, ctx);
    }
    if (req.kind === 'HCALL') {
      this.counters.exits += 1;
      this.counters.hcalls += 1;
      ctx.charge('exit.hcall');
      const mine = await this.device?.hcall?.(req, ctx, vm);
      if (mine) {
        this.counters.inKernel += 1;
        return mine;
      }
      return this.toUser(`qemu-${vm}`, 'HCALL_EXIT', req, ctx);
    }
    if (req.kind === 'VM_MIGRATE') {
      // Not a guest exit: the migrate command the VMM gets from the management plane (the guest
      // sends it, as it knows when its workload reaches the step). KVM only passes it on.
      this.counters.migrations += 1;
      const r = await ctx.call(`qemu-${vm}`, 'VM_MIGRATE', req.payload);
      return { status: r.status, payload: r.payload };
    }
    return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
  }

  private async toUser(peer: string, kind: 'MMIO_EXIT' | 'HCALL_EXIT', req: Request, ctx: OpContext): Promise<HandlerResult> {
    this.counters.userExits += 1;
    const r = await ctx.call(peer, kind, req.payload, req.guestMemory);
    return { status: r.status, payload: r.payload, guestMemory: r.guestMemory };
  }

  stats(): Record<string, number> {
    return { ...this.counters, ...(this.device?.stats() ?? {}) };
  }
}

export async function createRole(env: RoleEnv): Promise<RoleInstance> {
  const part = designOf(env.topology.model).parts.kvm;
  return new KvmRole(env, part ? await part() : undefined);
}

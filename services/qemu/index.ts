import { Errno } from '../runtime/errors.js';
import type { StartReply } from '../runtime/generated/vmmsim/v1/StartReply.js';
import { decodeMmio } from '../formats/kvm-run.js';
import type { OpContext } from '../runtime/op-context.js';
import { EMPTY, type HandlerResult, type RoleEnv, type RoleInstance, type Request } from '../runtime/role-api.js';
import { designOf } from '../designs/registry.js';
import type { VmmDevice, VmmDeviceFactory } from './device.js';
import { VmMigration } from './migration.js';
import { VirtioMemDevice, isVirtioMemMmio } from './virtio-mem.js';

/** qemu-N: the VMM of VM N, holding the vIOMMU device model of the run's architecture (if any). */
class QemuRole implements RoleInstance {
  private readonly device: VmmDevice | undefined;
  /** The VM's host objects that a live migration re-creates (its HW queues). */
  private readonly migration: VmMigration;
  /** The VM's virtio-mem device (memory hot-(un)plug), whatever the vIOMMU. */
  private readonly virtioMem: VirtioMemDevice;
  private exits = 0;

  constructor(env: RoleEnv, vmmDevice: VmmDeviceFactory | undefined) {
    this.device = vmmDevice?.(env);
    this.migration = new VmMigration(env);
    this.virtioMem = new VirtioMemDevice(env);
  }

  async handle(req: Request, ctx: OpContext): Promise<HandlerResult> {
    if (req.kind === 'VM_MIGRATE') return this.migration.migrate(req, ctx);
    if (req.kind === 'HCALL_EXIT') {
      this.exits += 1;
      if (!this.device?.hcallExit) return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
      return this.device.hcallExit(req, ctx);
    }
    if (req.kind !== 'MMIO_EXIT') return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
    this.exits += 1;
    const access = decodeMmio(req.payload);
    if (!access) return { status: -Errno.EINVAL, payload: EMPTY };
    if (isVirtioMemMmio(access.physAddr)) return this.virtioMem.mmioExit(access, req, ctx);
    if (!this.device) return { status: 0, payload: req.payload };
    return this.device.mmioExit(access, req, ctx);
  }

  /** The run begins: the devices this VMM emulates start their DMA. */
  async start(): Promise<StartReply> {
    this.device?.start?.();
    return { ops: [], hops: [], elapsedSec: 0, modeledElapsedNs: 0, guestCommands: 0 };
  }

  stats(): Record<string, number> {
    return { exits: this.exits, ...(this.device?.stats() ?? {}), ...this.migration.counters, ...this.virtioMem.counters };
  }

  close(): void {
    this.device?.close?.();
  }
}

export async function createRole(env: RoleEnv): Promise<RoleInstance> {
  const part = designOf(env.topology.model).parts.vmm;
  return new QemuRole(env, part ? await part() : undefined);
}

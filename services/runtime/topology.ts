import type { Endpoint__Output } from './generated/vmmsim/v1/Endpoint.js';

export const ROLES = ['guest', 'kvm', 'qemu', 'vfio', 'psmmu'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s);
}

/** Kubernetes-style process name: kvm and vfio are host singletons, the rest carry an index. */
export function endpointName(role: Role, index: number): string {
  return role === 'kvm' || role === 'vfio' ? role : `${role}-${index}`;
}

/**
 * Which roles a role opens links to (requests flow this way, replies come back). Start order is
 * the reverse of this graph: a process starts after everything it links to.
 */
export const DOWNSTREAM: Record<Role, readonly Role[]> = {
  guest: ['kvm', 'psmmu'],
  // kvm -> vfio: in-kernel paths (vhost-iommu, in-kernel TCE) reach the host IOMMU with no VMM.
  kvm: ['qemu', 'vfio'],
  qemu: ['vfio'],
  vfio: ['psmmu'],
  psmmu: [],
};

/** Start order: every role after all of its downstream roles. Stop in reverse. */
export const START_ORDER: readonly Role[] = ['psmmu', 'vfio', 'qemu', 'kvm', 'guest'];

export const TRANSITION_KINDS = ['exit', 'user', 'ioctl', 'hw', 'direct'] as const;
export type TransitionKind = (typeof TRANSITION_KINDS)[number];
export type TransitionCounts = Record<TransitionKind, number>;

export function zeroTransitions(): TransitionCounts {
  return { exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 };
}

/**
 * The context transition a request pays when it crosses from one role to the next. kvm -> vfio is
 * a call inside the host kernel (vhost-iommu, in-kernel TCE) and pays none of its own; replies
 * travel back through the transition their request paid, so they are not counted again. On bare
 * metal (`guestIsHost`: the guest process plays the host kernel) guest -> psmmu is the host
 * kernel's own access to the hardware, `hw`, not a guest's untrapped one.
 */
export function transitionOf(from: Role, to: Role, guestIsHost = false): TransitionKind | undefined {
  if (guestIsHost && from === 'guest' && to === 'psmmu') return 'hw';
  if (from === 'guest' && to === 'kvm') return 'exit';
  if (from === 'kvm' && to === 'qemu') return 'user';
  if (from === 'qemu' && to === 'vfio') return 'ioctl';
  if (from === 'vfio' && to === 'psmmu') return 'hw';
  if (from === 'guest' && to === 'psmmu') return 'direct';
  return undefined;
}

export type Endpoint = Endpoint__Output & { role: Role };

/** Endpoints by id and by name, built once per topology. */
export class EndpointTable {
  private readonly byId = new Map<number, Endpoint>();
  private readonly byName = new Map<string, Endpoint>();

  constructor(endpoints: readonly Endpoint__Output[]) {
    for (const e of endpoints) {
      if (!isRole(e.role)) throw new Error(`unknown role ${e.role} in topology`);
      const ep = e as Endpoint;
      this.byId.set(ep.id, ep);
      this.byName.set(ep.name, ep);
    }
  }

  id(id: number): Endpoint | undefined {
    return this.byId.get(id);
  }

  name(name: string): Endpoint | undefined {
    return this.byName.get(name);
  }

  ofRole(role: Role): Endpoint[] {
    return [...this.byId.values()].filter((e) => e.role === role).sort((a, b) => a.index - b.index);
  }

}

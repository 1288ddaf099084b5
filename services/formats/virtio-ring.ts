/** Where a split virtqueue's three parts sit in guest memory (virtio 1.x, 2.7): its size and addresses. */
export interface VirtqueueLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
}

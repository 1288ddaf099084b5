/*
 * The GLib hash-table operations behind three QEMU cost steps, timed on this machine with the
 * system's GLib (what a distribution's QEMU links):
 *
 *   vmm.iotlb_invalidate  hw/arm/smmu-common.c smmu_iotlb_inv_iova for one page with a TTL hint:
 *                         g_hash_table_remove of the exact key (hit: the entry is freed with its
 *                         key), and on a miss g_hash_table_foreach_remove over every entry with the
 *                         asid/vmid/iova predicate. The table is the vSMMU's IOTLB (key: iova,
 *                         asid, vmid, tg, level; Jenkins-style hash; value: the cached TLB entry),
 *                         at most SMMU_IOTLB_MAX_SIZE = 256 entries.
 *   vmm.dispatch_lookup   one g_hash_table_lookup of an ASID in a table of a few entries.
 *
 * The key layout and the hash are this file's own (the same fields and the same kind of mixing as
 * QEMU's smmu_iotlb_key_hash), so what is timed is GLib's work on a table of that shape.
 *
 * Build and run (Debian: apt-get install libglib2.0-dev):
 *   cc -O2 -o /tmp/qemu-glib-hash bench/micro/qemu-glib-hash.c $(pkg-config --cflags --libs glib-2.0)
 *   /tmp/qemu-glib-hash            # one line per case: median ns per operation over 201 batches
 */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
  uint64_t iova;
  int asid;
  int vmid;
  uint8_t tg;
  uint8_t level;
} IotlbKey;

typedef struct {
  uint64_t iova;
  uint64_t addr_mask;
  uint64_t translated;
  int perm;
  uint8_t level;
  uint8_t granule;
} IotlbEntry;

typedef struct {
  int asid;
  int vmid;
  uint64_t iova;
  uint64_t mask;
} InvInfo;

static inline uint32_t rol32(uint32_t w, unsigned s) { return (w << s) | (w >> (32 - s)); }

/* Bob Jenkins' final mix (lookup3), as hash tables of three 32-bit words commonly use. */
static guint key_hash(gconstpointer v) {
  const IotlbKey *k = v;
  uint32_t a, b, c;
  a = b = c = 0xdeadbeef + (uint32_t)sizeof(*k);
  a += (uint32_t)(k->asid + k->vmid + k->level + k->tg);
  b += (uint32_t)k->iova;
  c += (uint32_t)(k->iova >> 32);
  c ^= b; c -= rol32(b, 14);
  a ^= c; a -= rol32(c, 11);
  b ^= a; b -= rol32(a, 25);
  c ^= b; c -= rol32(b, 16);
  a ^= c; a -= rol32(c, 4);
  b ^= a; b -= rol32(a, 14);
  c ^= b; c -= rol32(b, 24);
  return c;
}

static gboolean key_equal(gconstpointer x, gconstpointer y) {
  const IotlbKey *p = x, *q = y;
  return p->asid == q->asid && p->vmid == q->vmid && p->iova == q->iova && p->tg == q->tg && p->level == q->level;
}

static gboolean remove_by_asid_vmid_iova(gpointer key, gpointer value, gpointer user) {
  const IotlbKey *k = key;
  const IotlbEntry *e = value;
  const InvInfo *info = user;
  if (info->asid >= 0 && info->asid != k->asid) return FALSE;
  if (info->vmid >= 0 && info->vmid != k->vmid) return FALSE;
  return ((info->iova & ~e->addr_mask) == e->iova) || ((e->iova & ~info->mask) == info->iova);
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

#define BATCHES 201
#define PER_BATCH 64

static void insert(GHashTable *t, int asid, uint64_t iova) {
  IotlbKey *k = g_new0(IotlbKey, 1);
  IotlbEntry *e = g_new0(IotlbEntry, 1);
  k->iova = iova; k->asid = asid; k->vmid = 1; k->tg = 1; k->level = 3;
  e->iova = iova; e->addr_mask = 0xfff; e->translated = iova ^ 0x80000000ull; e->perm = 3; e->level = 3; e->granule = 12;
  g_hash_table_insert(t, k, e);
}

/* A table of `resident` entries (other IOVAs of the same ASID) to invalidate in. */
static GHashTable *iotlb_with(int resident) {
  GHashTable *t = g_hash_table_new_full(key_hash, key_equal, g_free, g_free);
  for (int i = 0; i < resident; i++) insert(t, 1, 0x100000000ull + (uint64_t)i * 0x1000 * 7);
  return t;
}

/* smmu_iotlb_inv_iova, one page, TTL set, entry cached: g_hash_table_remove hits and frees it. */
static double inv_hit(int resident) {
  GHashTable *t = iotlb_with(resident);
  double per[BATCHES];
  for (int b = 0; b < BATCHES; b++) {
    for (int i = 0; i < PER_BATCH; i++) insert(t, 1, 0x900000000ull + (uint64_t)i * 0x1000);
    double t0 = now_ns();
    for (int i = 0; i < PER_BATCH; i++) {
      IotlbKey k = {.iova = 0x900000000ull + (uint64_t)i * 0x1000, .asid = 1, .vmid = 1, .tg = 1, .level = 3};
      if (!g_hash_table_remove(t, &k)) abort();
    }
    per[b] = (now_ns() - t0) / PER_BATCH;
  }
  g_hash_table_destroy(t);
  qsort(per, BATCHES, sizeof(double), cmp_double);
  return per[BATCHES / 2];
}

/* The same invalidation when the entry is not cached: the exact remove misses, then every entry is tested. */
static double inv_miss(int resident) {
  GHashTable *t = iotlb_with(resident);
  double per[BATCHES];
  for (int b = 0; b < BATCHES; b++) {
    double t0 = now_ns();
    for (int i = 0; i < PER_BATCH; i++) {
      uint64_t iova = 0xa00000000ull + (uint64_t)(b * PER_BATCH + i) * 0x1000;
      IotlbKey k = {.iova = iova, .asid = 1, .vmid = 1, .tg = 1, .level = 3};
      if (g_hash_table_remove(t, &k)) abort();
      InvInfo info = {.asid = 1, .vmid = 1, .iova = iova, .mask = 0xfff};
      if (g_hash_table_foreach_remove(t, remove_by_asid_vmid_iova, &info) != 0) abort();
    }
    per[b] = (now_ns() - t0) / PER_BATCH;
  }
  g_hash_table_destroy(t);
  qsort(per, BATCHES, sizeof(double), cmp_double);
  return per[BATCHES / 2];
}

/* One lookup of an ASID (direct hash) in a table of `entries` ASIDs, hits in turn. */
static double asid_lookup(int entries) {
  GHashTable *t = g_hash_table_new(g_direct_hash, g_direct_equal);
  static int target;
  for (int i = 0; i < entries; i++) g_hash_table_insert(t, GINT_TO_POINTER(i + 1), &target);
  double per[BATCHES];
  volatile uintptr_t sink = 0;
  for (int b = 0; b < BATCHES; b++) {
    double t0 = now_ns();
    for (int i = 0; i < PER_BATCH; i++) sink += (uintptr_t)g_hash_table_lookup(t, GINT_TO_POINTER((i % entries) + 1));
    per[b] = (now_ns() - t0) / PER_BATCH;
  }
  (void)sink;
  g_hash_table_destroy(t);
  qsort(per, BATCHES, sizeof(double), cmp_double);
  return per[BATCHES / 2];
}

int main(void) {
  printf("glib %u.%u.%u\n", glib_major_version, glib_minor_version, glib_micro_version);
  /* Warm the allocator and the code once. */
  (void)inv_hit(64); (void)inv_miss(64); (void)asid_lookup(4);
  const int sizes[] = {0, 1, 8, 64, 255};
  for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    printf("iotlb_inv_iova hit  resident=%-3d %7.1f ns\n", sizes[i], inv_hit(sizes[i]));
    printf("iotlb_inv_iova miss resident=%-3d %7.1f ns\n", sizes[i], inv_miss(sizes[i]));
  }
  const int asids[] = {1, 4, 16};
  for (unsigned i = 0; i < sizeof(asids) / sizeof(asids[0]); i++) printf("asid_lookup entries=%-3d %7.1f ns\n", asids[i], asid_lookup(asids[i]));
  return 0;
}

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The per-source port set, shared by the BPF side (which inserts) and
 * userspace (which estimates and tests). Fixed size, 864 bytes:
 *
 *   ports[64]  the first 64 distinct ports, exactly (threshold decisions and
 *              sample ports come from here);
 *   bm_a       4096 bits; bit (perm(port) >> 4): each bit stands for exactly
 *              16 ports because perm is a bijection on 16 bits, so linear
 *              counting has a finite-population form that is exact at 65,536;
 *   bm_b       1024 bits; an exact, stratified 1-in-64 sample: exactly one
 *              port of every block of 64 consecutive ports (offset
 *              st_sample_offset(block)), bit = block. Stratified so that a
 *              consecutive range holds its fair share of sample ports.
 * bm_a is accurate for small and medium counts, bm_b for large ones;
 * userspace combines the two (see src/detect/portset_estimate.cpp).
 */
#ifndef SCANTRACE_PORTSET_H
#define SCANTRACE_PORTSET_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define ST_PORTS_EXACT 64
#define ST_BM_A_BITS 4096
#define ST_BM_B_BITS 1024
#define ST_BM_A_SHIFT 4 /* 65536 / 4096 ports per bit */
#define ST_BM_B_SHIFT 6 /* 1-in-64 sample */

/* A bijection on 16 bits that scatters sequential ports: odd multipliers
 * and xor-shifts are each invertible modulo 2^16. */
static inline __u16 st_port_perm(__u16 port)
{
	__u32 x = port;

	x = (x * 0x9E3Bu) & 0xFFFFu;
	x ^= x >> 7;
	x = (x * 0x6A1Du) & 0xFFFFu;
	x ^= x >> 9;
	x = (x * 0x2C8Bu) & 0xFFFFu;
	x ^= x >> 5;
	return (__u16)x;
}

/* The sampled offset inside block b (0..1023): scattered so that port
 * patterns aligned to powers of two do not line up with the sample. */
static inline __u16 st_sample_offset(__u16 block)
{
	__u32 x = (__u32)block * 0x2F5u;

	x ^= x >> 6;
	return (__u16)((x * 0x1Bu) & 63u);
}

/* Whether port belongs to the bm_b sample. */
static inline int st_port_sampled(__u16 port)
{
	return (port & 63u) == st_sample_offset(port >> 6);
}

#endif /* SCANTRACE_PORTSET_H */

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Instantiates the template named by ST_TEMPLATE (a header that includes
 * sock.bpf.h and names its functions with ST_NAME) once per read mode:
 *   _btf    direct loads, for BTF-typed arguments (tp_btf, fentry)
 *   _probe  probe reads, for untyped ones (raw_tp, kprobe)
 * Include it with ST_TEMPLATE defined; it undefines ST_TEMPLATE.
 */
#define ST_SFX btf
#define ST_R ST_READ_DIRECT
#define ST_RCOPY ST_RCOPY_DIRECT
#define ST_TCP_SOCK ST_TCP_SOCK_DIRECT
#include ST_TEMPLATE
#undef ST_SFX
#undef ST_R
#undef ST_RCOPY
#undef ST_TCP_SOCK

#define ST_SFX probe
#define ST_R ST_READ_PROBE
#define ST_RCOPY ST_RCOPY_PROBE
#define ST_TCP_SOCK ST_TCP_SOCK_PROBE
#include ST_TEMPLATE
#undef ST_SFX
#undef ST_R
#undef ST_RCOPY
#undef ST_TCP_SOCK

#undef ST_TEMPLATE

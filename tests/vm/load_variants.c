// Loads every BPF program of scantrace's objects alone, on the running kernel,
// and prints one JSON line per program: did the verifier accept it, and (with
// --attach) could it attach. Plus one "facts" line: what the kernel offers
// that decides which variants should load. tests/vm/test_variants.py turns
// the lines into assertions; run by hand it is a quick portability report:
//
//   cc -O2 -Wall -o /tmp/load_variants tests/vm/load_variants.c -lbpf
//   /tmp/load_variants --attach build/bpf/conn.bpf.o build/bpf/scan.bpf.o
//   /tmp/load_variants --facts
//
// Each program is loaded from a fresh bpf_object with every other program's
// autoload off, so one program the kernel rejects never hides another. Maps
// are created per attempt with the sizes compiled into the object. Attaching
// (tracing, kprobe, raw tracepoint programs; never sock_ops, which needs a
// cgroup) lasts only as long as the check: the link is destroyed at once.
//
// Needs root (CAP_BPF, CAP_PERFMON). Exit: 0 when every line was printed
// (pass/fail is the caller's call), 2 on usage or open errors.
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

// libbpf's messages (warnings and the verifier log) of the current attempt.
static char g_log[65536];
static size_t g_log_len;

static int collect(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	if (g_log_len < sizeof(g_log) - 1) {
		int n = vsnprintf(g_log + g_log_len, sizeof(g_log) - g_log_len, fmt, ap);
		if (n > 0)
			g_log_len += (size_t)n < sizeof(g_log) - g_log_len ? (size_t)n : sizeof(g_log) - g_log_len - 1;
	}
	return 0;
}

static void log_reset(void)
{
	g_log_len = 0;
	g_log[0] = 0;
}

// A JSON string of s (at most max bytes, from its end when tail is set).
static void json_str(const char *s, size_t max, int tail)
{
	size_t len = strlen(s);
	if (len > max) {
		if (tail)
			s += len - max;
		len = max;
	}
	putchar('"');
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

// The verifier's own words: the lines between libbpf's BEGIN/END PROG LOAD
// LOG markers, or all of libbpf's messages when there are none.
static const char *verifier_log(void)
{
	static char buf[sizeof(g_log)];
	const char *b = strstr(g_log, "-- BEGIN PROG LOAD LOG --\n");
	const char *e = b ? strstr(b, "-- END PROG LOAD LOG --") : NULL;
	if (!b || !e)
		return g_log;
	b += strlen("-- BEGIN PROG LOAD LOG --\n");
	size_t n = (size_t)(e - b);
	memcpy(buf, b, n);
	buf[n] = 0;
	return buf;
}

static const char *errname(int err)
{
	switch (err) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case EINVAL: return "EINVAL";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case E2BIG: return "E2BIG";
	case ENOTSUP: return "ENOTSUP";
	case EBUSY: return "EBUSY";
	case EFAULT: return "EFAULT";
	default: return "other";
	}
}

static int can_attach(const struct bpf_program *p)
{
	switch (bpf_program__type(p)) {
	case BPF_PROG_TYPE_TRACING:
	case BPF_PROG_TYPE_KPROBE:
	case BPF_PROG_TYPE_RAW_TRACEPOINT:
	case BPF_PROG_TYPE_TRACEPOINT:
		return 1;
	default:
		return 0;
	}
}

static int check_one(const char *path, const char *name, int attach)
{
	log_reset();
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fprintf(stderr, "load_variants: cannot open %s: %s\n", path, strerror(errno));
		return -1;
	}
	struct bpf_program *p, *target = NULL;
	bpf_object__for_each_program(p, obj) {
		int me = strcmp(bpf_program__name(p), name) == 0;
		bpf_program__set_autoload(p, me);
		if (me)
			target = p;
	}
	if (!target) {
		bpf_object__close(obj);
		return -1;
	}
	const char *object = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	printf("{\"object\":");
	json_str(object, 200, 0);
	printf(",\"program\":");
	json_str(name, 200, 0);
	printf(",\"section\":");
	json_str(bpf_program__section_name(target), 200, 0);

	int err = bpf_object__load(obj);
	if (err) {
		printf(",\"load\":\"fail\",\"errno\":%d,\"error\":\"%s\",\"log\":", -err, errname(-err));
		json_str(verifier_log(), 1500, 1);
	} else {
		printf(",\"load\":\"ok\",\"insns\":%zu", bpf_program__insn_cnt(target));
		if (!attach || !can_attach(target)) {
			printf(",\"attach\":\"skipped\"");
		} else {
			log_reset();
			struct bpf_link *link = bpf_program__attach(target);
			if (link) {
				printf(",\"attach\":\"ok\"");
				bpf_link__destroy(link);
			} else {
				int e = errno;
				printf(",\"attach\":\"fail\",\"attach_errno\":%d,\"attach_error\":\"%s\",\"attach_log\":", e,
				       errname(e));
				json_str(g_log, 600, 1);
			}
		}
	}
	printf("}\n");
	fflush(stdout);
	bpf_object__close(obj);
	return 0;
}

static int check_object(const char *path, int attach)
{
	// The program names first, from an object that is never loaded.
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fprintf(stderr, "load_variants: cannot open %s: %s\n", path, strerror(errno));
		return -1;
	}
	char names[256][128];
	int n = 0;
	struct bpf_program *p;
	bpf_object__for_each_program(p, obj) {
		if (n < 256)
			snprintf(names[n++], sizeof(names[0]), "%s", bpf_program__name(p));
	}
	bpf_object__close(obj);
	for (int i = 0; i < n; i++)
		if (check_one(path, names[i], attach) != 0)
			return -1;
	return 0;
}

// ---- facts ----------------------------------------------------------------

// Parameters of the BTF-typed tracepoint tp (without ctx), or -1.
static int tp_args(const struct btf *btf, const char *tp)
{
	char name[128];
	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	int id = btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF);
	if (id < 0)
		return -1;
	const struct btf_type *t = btf__type_by_id(btf, btf__type_by_id(btf, id)->type);
	if (!t || !btf_is_ptr(t))
		return -1;
	t = btf__type_by_id(btf, t->type);
	if (!t || !btf_is_func_proto(t))
		return -1;
	return btf_vlen(t) - 1;
}

// 0 when a minimal fentry program on func loads, else the errno.
static int fentry_trial(const struct btf *btf, const char *func)
{
	int id = btf__find_by_name_kind(btf, func, BTF_KIND_FUNC);
	if (id < 0)
		return ENOENT;
	const struct bpf_insn insns[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0},
		{.code = BPF_JMP | BPF_EXIT},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FENTRY, .attach_btf_id = (__u32)id);
	int fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, "vt_probe", "GPL", insns, 2, &opts);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

static void print_facts(void)
{
	struct utsname u;
	uname(&u);
	struct btf *btf = btf__load_vmlinux_btf();
	printf("{\"facts\":true,\"kernel\":");
	json_str(u.release, 100, 0);
	printf(",\"btf\":%s", btf ? "true" : "false");
	if (btf) {
		int fe = fentry_trial(btf, "tcp_v4_send_reset");
		printf(",\"fentry\":\"%s\",\"fentry_errno\":%d", fe ? errname(fe) : "ok", fe);
		printf(",\"kfree_skb_args\":%d", tp_args(btf, "kfree_skb"));
		printf(",\"tcp_send_reset_args\":%d", tp_args(btf, "tcp_send_reset"));
		printf(",\"sk_rst_reason\":%s", btf__find_by_name_kind(btf, "sk_rst_reason", BTF_KIND_ENUM) >= 0 ? "true" : "false");
		printf(",\"skb_drop_reason\":%s",
		       btf__find_by_name_kind(btf, "skb_drop_reason", BTF_KIND_ENUM) >= 0 ? "true" : "false");
		const char *funcs[] = {"tcp_v4_send_reset", "tcp_v6_send_reset", "tcp_v4_conn_request", "tcp_v6_conn_request"};
		printf(",\"functions\":{");
		for (size_t i = 0; i < sizeof(funcs) / sizeof(funcs[0]); i++)
			printf("%s\"%s\":%s", i ? "," : "", funcs[i],
			       btf__find_by_name_kind(btf, funcs[i], BTF_KIND_FUNC) >= 0 ? "true" : "false");
		printf("}");
		btf__free(btf);
	}
	printf(",\"kprobe_pmu\":%s", access("/sys/bus/event_source/devices/kprobe/type", R_OK) == 0 ? "true" : "false");
	printf(",\"module_btf\":%s}\n", access("/sys/kernel/btf/veth", R_OK) == 0 || access("/sys/kernel/btf/overlay", R_OK) == 0
						? "true"
						: "false");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int attach = 0, facts = 0, nobj = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--attach") == 0)
			attach = 1;
		else if (strcmp(argv[i], "--facts") == 0)
			facts = 1;
		else if (argv[i][0] == '-') {
			fprintf(stderr, "usage: %s [--facts] [--attach] OBJECT.bpf.o...\n", argv[0]);
			return 2;
		} else
			nobj++;
	}
	if (!facts && !nobj) {
		fprintf(stderr, "usage: %s [--facts] [--attach] OBJECT.bpf.o...\n", argv[0]);
		return 2;
	}
	libbpf_set_print(collect);
	print_facts();
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		if (check_object(argv[i], attach) != 0)
			return 2;
	}
	return 0;
}

/*
 * iofuzz-exec: the in-guest executor of avocado-iofuzz.
 *
 * It performs the I/O ops of a fuzzing run inside a guest (port I/O, MMIO and
 * PCI config space), computing them
 * itself with the same counter-based generator as avocado_iofuzz/model/program.py
 * (a unit test compares both byte for byte through --dry-run; change them
 * together). Progress marks go to stdout, which is the guest's serial console,
 * so the host can bound a crash or hang to a window of at most K ops.
 *
 * Usage:
 *   iofuzz-exec [--dry-run | --check] [--limit-loop | --bare-loop] --seed S --fuzz-count N
 *               [--report-every K] [--resume I:J] [--hang-at I:J] [--scratch 0xBASE-0xEND]
 *               [--no-pci-restore | --pci-saved I:TYPE:0xCMD[:0xV...]] [--readback] (RANGE... | --ranges-stdin)
 *   RANGE is [I:][SPACE:]0xSTART-0xEND[/W][,N][!|!0xV][+dma][@S][~E:U]: inclusive bounds in hex,
 *   optional range index I (default: position in the argument list), address
 *   space SPACE (pio, the default; mmio; pci), access width W (1, 2 or 4
 *   bytes, 8 too for mmio; default 1), fuzz count N (default --fuzz-count)
 *   and value mode (+dma: see below; default uniform words; +dma=LAYOUT fills the
 *   scratch memory with one device family's structures, see fill_layout). ~E:U paces the
 *   range: before every op index that is a positive multiple of E, the
 *   executor sleeps U microseconds, so QEMU's main loop runs the timers and
 *   bottom halves (USB frames, NIC and storage DMA) a flat-out loop starves.
 *   Pauses depend on the op index only: a resume pauses where a run did.
 *   ! makes the range fuzz-only: no read and zero phases, its ops are the N * slots
 *   seeded writes alone (a guided program's step: a zero write to a status or
 *   address register would undo the step before it). !0xV (V in hex, at most
 *   the width's bits) is fuzz-only with a fixed value: every write writes V to
 *   the slot the generator picks (one register: V, N times), an exact
 *   bring-up step; with +dma the scratch memory is filled as usual.
 *   @S gives the range its own seed S (decimal or 0x hex) instead of --seed:
 *   the range's generator is derived from S and its bounds as from --seed,
 *   so a range without @S makes the ops it always made.
 *
 * DMA-aware values (+dma, see avocado_iofuzz/model/dma.py): write values come
 * from a dictionary (scratch addresses and offsets, sizes, 0, all-ones, small
 * integers, powers of two, or uniform words), and the scratch memory --
 * guest RAM at --scratch that the kernel command line reserved with
 * memmap=SIZE$BASE -- is filled from the generator at the first op run of the
 * range and at every multiple of SCRATCH_EPOCH_OPS. --dry-run prints each
 * fill as M <range_index> <op_index> <hex bytes> before that op.
 * --check prints @NOSCRATCH <reason> when a +dma range exists and the scratch
 * memory cannot be mapped; a real run then fails with @ERR (status 3). A real
 * run turns on bus mastering of the PCI function whose BAR holds a +dma range.
 *
 * Address spaces:
 *   pio   I/O ports 0x0-0xffff, reached with in/out after iopl(3).
 *   mmio  guest-physical addresses. A range inside a PCI memory BAR is mapped
 *         through that BAR's sysfs file (/sys/bus/pci/devices/D/resourceN),
 *         any other through /dev/mem; accesses are single loads and stores of
 *         W bytes on the uncached mapping.
 *   pci   config space: address = bus << 20 | device << 15 | function << 12 |
 *         register (domain 0), reached with pread/pwrite of W bytes on
 *         /sys/bus/pci/devices/0000:BB:DD.F/config (the kernel's own config
 *         access method, under its lock). A range stays within one function.
 *
 * Output protocol (one line each, written and drained before going on):
 *   @IOFUZZ READY <version> <n_ranges>   setup done, ops start now
 *   @P <range_index> <ops_done>          at the start of a range, every K ops
 *                                        (at multiples of K) and at its end
 *   @HANG <range_index> <op_index>       fault injection reached (see --hang-at)
 *   @DONE <total_ops>                    ops performed by this invocation
 *   @SAVED <range_index> <type> 0xCMD 0xV...  entering a pci range: its function's header type,
 *                                        command register and saved registers (see below)
 *   @RESTORE <range_index> <op> REG:W:0xV...  leaving a pci range at op <op>: the config writes
 *                                        that put its function's header back (see below), in
 *                                        order, printed (and drained) before they are made
 *   @RB <range_index> [OFF:CLASS...]     under --readback, at a range's end: what its reads
 *                                        returned (see "read-backs" below)
 *   @DENIED <range_index> <reason>       the guest kernel refuses access to that
 *                                        range (lockdown, no /dev/mem, iomem=strict...)
 *   @ERR <message>                       failure; the exit status is non-zero
 * Every range's access path is set up before READY: a refusal prints @DENIED
 * for each refused range, then @ERR, and exits with status 3. --check sets up
 * every range the same way, prints @DENIED for each refused one and @DONE 0,
 * and performs no op (opening a pci range reads its vendor ID's low byte and
 * writes it back: a read-only register, the only way to learn whether config
 * writes are allowed).
 * --dry-run also prints every op as
 *   <range_index> <op_index> <r|w> 0x<port> <width> 0x<value>
 * and never calls iopl() nor touches a port.
 *
 * Header restore (pci ranges; --no-pci-restore turns it off): random writes to a
 * function's BARs and command register move its BARs or turn its decoding off
 * for the rest of QEMU's life, so every later op aimed at the device hits
 * nothing. On entering a pci range the executor reads the function's header
 * registers that decide where it decodes (command; BARs 0x10-0x24 and ROM 0x30
 * of a type-0 header; of a bridge's type-1 header BARs 0x10-0x14, bus numbers
 * 0x18, I/O window 0x1c, memory windows 0x20-0x2c, upper I/O 0x30, ROM 0x38 and
 * bridge control 0x3e); on leaving it (ops done, a stop signal, a config access
 * error) it writes back each register that changed: decoding off first, then
 * the registers, then the command register as it found it, so that no
 * half-restored BAR decodes in between. @RESTORE names the writes first. A
 * resume into the middle of a pci range (after a hang) finds the header half
 * fuzzed: --pci-saved hands over what @SAVED printed when the range was
 * entered, and that is what is put back.
 *
 * Safety: no port, memory or config access (nor any mapping) happens unless
 * /proc/cmdline carries the token iofuzz.guest=1, which only our embedded
 * guests set.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <termios.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "iofuzz-exec uses x86 port I/O instructions: build it for x86_64"
#endif

#define PROTOCOL_VERSION 1
#define GAMMA 0x9E3779B97F4A7C15ULL
#define MAX_RANGES 4096
#define MAX_RANGE_WORD 160 /* bytes of one RANGE word with its NUL: every field at its longest fits */
#define MAX_PORT 0xffffULL
#define MAX_PCI_ADDRESS 0xfffffffULL
#define MAX_OP_COUNT (1ULL << 62)
#define PAGE_SIZE_BYTES 4096ULL
#define IORESOURCE_IO 0x100ULL
#define IORESOURCE_MEM 0x200ULL
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_DECODE 0x3 /* I/O space and memory space */
#define PCI_COMMAND_REGISTER 0x04
#define PCI_HEADER_TYPE_REGISTER 0x0e
#define MAX_HEADER_REGISTERS 11
#define MAX_RESTORE_WRITES (MAX_HEADER_REGISTERS + 2)
#define PCI_DEVICES_DIR "/sys/bus/pci/devices"
#define MAX_FUZZ_COUNT 0xffffffffULL
#define MAX_REPORT_EVERY 0xffffffffULL
#define DEFAULT_REPORT_EVERY 4096
#define BARE_TABLE_OPS 65536
#define GUEST_MARKER "iofuzz.guest=1"

/* DMA-aware values: keep identical to avocado_iofuzz/model/dma.py */
#define SCRATCH_EPOCH_OPS 4096ULL
#define RING_DESCRIPTORS 256ULL
#define FILL_STREAM 0x5C7A7C4D3A11F00DULL
#define MIN_SCRATCH_SIZE 0x2000ULL
#define LAYOUT_SIZE 0x4000ULL /* device layouts: keep identical to avocado_iofuzz/model/dma_layouts.py */

enum layout {
	LAYOUT_GENERIC, LAYOUT_UHCI, LAYOUT_EHCI, LAYOUT_E1000, LAYOUT_VIRTIO, LAYOUT_NVME, LAYOUT_MEGASAS, LAYOUT_AHCI,
	/* the layouts only bring-up recipes name, one per line (model/dma_layouts.py's LAYOUTS, same order) */
	LAYOUT_EHCI_MSD,
	LAYOUT_VIRTIO_BLK_REQ,
	LAYOUT_MEGASAS_IO,
	LAYOUT_E1000E_NET,
	LAYOUT_VIRTIO_NET_MODERN,
	LAYOUT_LSI_SCRIPTS,
	LAYOUT_COUNT
};
static const char *const layout_names[] = {
	"generic", "uhci", "ehci", "e1000", "virtio", "nvme", "megasas", "ahci",
	"ehci_msd",
	"virtio_blk_req",
	"megasas_io",
	"e1000e_net",
	"virtio_net_modern",
	"lsi_scripts",
};

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_DENIED 3

enum space { SPACE_PIO, SPACE_MMIO, SPACE_PCI };
static const char *const space_names[] = { "pio", "mmio", "pci" };

struct range {
	uint64_t index;
	uint64_t start;
	uint64_t end;
	uint64_t width;
	uint64_t slots;
	uint64_t op_count;
	uint64_t rseed;
	enum space space;
	int dma; /* write values from the dictionary, scratch memory filled per epoch */
	uint64_t lead; /* ops before the fuzz phase: 2 * slots (read, zero), 0 for a ! (fuzz-only) range */
	int has_fixed; /* !0xV: every write writes `fixed` (the slots are still drawn from the generator) */
	uint64_t fixed;
	int layout; /* the scratch memory's layout (enum layout): generic, or one device family's */
	uint64_t pause_every, pause_us; /* ~E:U: sleep U us before op indices that are multiples of E (0: never) */
	/* mmio: the byte of address `start` in our mapping; pci: the config file */
	volatile uint8_t *mmio;
	int config_fd;
};

struct op {
	char kind;
	uint64_t port;
	uint64_t width;
	uint64_t value;
};

struct position {
	int set;
	uint64_t range_index;
	uint64_t op_index;
};

static int out_is_tty;

/* ---- the generator: keep identical to program.py ---------------------- */

static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static uint64_t range_seed(uint64_t seed, uint64_t start, uint64_t end)
{
	uint64_t h = mix64(seed + GAMMA);
	h = mix64((h ^ start) + GAMMA);
	return mix64((h ^ end) + GAMMA);
}

static inline uint64_t random_word(uint64_t rseed, uint64_t k)
{
	return mix64(rseed + (k + 1) * GAMMA);
}

/* ---- DMA-aware values: keep identical to model/dma.py ------------------ */

static uint64_t scratch_base, scratch_size;	/* --scratch; size is a power of two */
static volatile uint64_t *scratch_words;	/* the mapping (or, under --dry-run, a buffer) */

static const uint64_t dictionary_sizes[] = { 0 /* scratch size */, RING_DESCRIPTORS * 16, RING_DESCRIPTORS, 16,
					     8, 64, 128, 256, 512, 1024, 1514, 2048, 4096 };

static inline __attribute__((always_inline)) uint64_t dictionary_value(uint64_t word, uint64_t width)
{
	uint64_t bits = 8 * width, value, lanes;

	switch (word >> 60) {
	case 5: /* the page frame number of a scratch page: virtio legacy's QUEUE_PFN */
		value = (scratch_base + (word & (scratch_size - 1) & ~0xFFFULL)) >> 12;
		break;
	case 6:
		value = scratch_base + (word & (scratch_size - 1) & ~0xFULL);
		break;
	case 7:
		value = scratch_base + (word & (scratch_size - 1) & ~0xFFFULL);
		break;
	case 8:
		lanes = 8 / width;
		value = scratch_base + (word & (scratch_size - 1) & ~0xFULL);
		if (lanes > 1)
			value >>= bits * (((word >> 56) & 7) % lanes);
		break;
	case 9:
		value = 0;
		break;
	case 10:
		value = ~0ULL;
		break;
	case 11:
		value = word & 31;
		break;
	case 12:
		value = 1ULL << ((word & 63) % bits);
		break;
	case 13:
		value = (word & 0xFF) % (sizeof(dictionary_sizes) / sizeof(dictionary_sizes[0]));
		value = value ? dictionary_sizes[value] : scratch_size;
		break;
	case 14:
		value = word & (scratch_size - 1);
		break;
	case 15: {
		uint64_t shift = (word & 63) % bits + 1;

		value = shift >= 64 ? ~0ULL : (1ULL << shift) - 1;
		break;
	}
	default:
		value = word; /* kinds 0-5: a uniform word */
	}
	return value;
}

static void fill_layout(int layout, uint64_t seed, volatile uint32_t *dwords);

/* The scratch memory's contents at the start of `epoch` of range r: a ring of
 * descriptors (address in the scratch memory, power-of-two length, flags),
 * then random words, a quarter of them pairs of 32-bit pointers into it. */
static void fill_scratch(const struct range *r, uint64_t epoch, volatile uint64_t *words)
{
	uint64_t seed = mix64((r->rseed ^ FILL_STREAM) + (epoch + 1) * GAMMA);
	uint64_t ring_words = 2 * RING_DESCRIPTORS;

	if (r->layout != LAYOUT_GENERIC) {
		fill_layout(r->layout, seed, (volatile uint32_t *)words);
		return;
	}

	for (uint64_t d = 0; d < RING_DESCRIPTORS; d++) {
		uint64_t word = random_word(seed, 2 * d);
		uint64_t flags = random_word(seed, 2 * d + 1) & 0xffffffffULL;

		words[2 * d] = scratch_base + (word & (scratch_size - 1) & ~0xFULL);
		words[2 * d + 1] = (1ULL << ((word >> 32) % 13)) | flags << 32;
	}
	for (uint64_t k = 0; k < scratch_size / 8 - ring_words; k++) {
		uint64_t word = random_word(seed, ring_words + k);

		if (!(word >> 62)) /* one in four: two 32-bit link pointers into the scratch memory */
			word = (scratch_base + ((word >> 16) & (scratch_size - 1) & ~0xFULL)) << 32 |
			       (scratch_base + (word & (scratch_size - 1) & ~0xFULL));
		words[ring_words + k] = word;
	}
}

/* ---- device layouts of the scratch memory: keep identical to model/dma_layouts.py ---- */

#define PAGE_BYTES 0x1000ULL
#define LAYOUT_DWORDS (LAYOUT_SIZE / 4)

/* random bytes from first_byte to the end (data buffers, frames): word d / 2 fills dwords d and d + 1 */
static void fill_random_tail(uint64_t seed, volatile uint32_t *dw, uint64_t first_byte)
{
	for (uint64_t d = first_byte / 4; d < LAYOUT_DWORDS; d += 2) {
		uint64_t word = random_word(seed, d / 2);

		dw[d] = (uint32_t)word;
		dw[d + 1] = (uint32_t)(word >> 32);
	}
}
#define STRUCT_WORDS LAYOUT_DWORDS
#define PID_SETUP 0x2D
#define PID_IN 0x69
#define PID_OUT 0xE1
#define TX_EOP 0x01
#define TX_IFCS 0x02
#define TX_IC_TSE 0x04
#define TX_RS 0x08
#define TX_DEXT 0x20
#define TX_VLE 0x40

/* one time in 2**bits: the bit field of `word` at `shift` is zero */
static inline int maybe(uint64_t word, unsigned shift, unsigned bits)
{
	return ((word >> shift) & ((1ULL << bits) - 1)) == 0;
}

/* Little- and big-endian fields of the structures the device layouts build in byte buffers. */
static void put_le(volatile uint8_t *out, uint64_t value, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		out[i] = (uint8_t)(value >> (8 * i));
}

static void put_be(volatile uint8_t *out, uint64_t value, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		out[i] = (uint8_t)(value >> (8 * (bytes - 1 - i)));
}

/* n bytes built in a buffer, stored as the scratch memory's little-endian dwords (a last partial one zero-padded) */
static void store_bytes(volatile uint32_t *dw, const uint8_t *bytes, uint64_t n)
{
	for (uint64_t i = 0; i < n; i += 4) {
		uint32_t v = 0;

		for (uint64_t j = 0; j < 4 && i + j < n; j++)
			v |= (uint32_t)bytes[i + j] << (8 * j);
		dw[i / 4] = v;
	}
}

static uint32_t uhci_link(uint64_t word)
{
	int qh = maybe(word, 4, 2);
	uint64_t cell = (((word >> 16) & 1) == 0 ? 0x100 : 0x300) + ((word >> 8) & 0xFF);

	cell = qh ? cell & ~7ULL : cell | (cell % 8 == 0 ? 1 : 0);
	return (uint32_t)((scratch_base + cell * 16) | (qh ? 2 : 0) | ((word >> 6) & 1) << 2 | (maybe(word, 0, 4) ? 1 : 0));
}

static void uhci_td(uint64_t w0, uint64_t w1, volatile uint32_t *out)
{
	static const uint32_t pids[] = { PID_SETUP, PID_SETUP, PID_IN, PID_IN, PID_IN, PID_OUT, PID_OUT };
	uint64_t ctrl = 3ULL << 27 | 0x7FF, pid, device, endpoint, maxlen;

	if (!maybe(w0, 32, 4))
		ctrl |= 1ULL << 23;
	ctrl |= ((w0 >> 36) & 1) << 24 | ((w0 >> 37) & 1) << 29 | (maybe(w0, 38, 3) ? 1ULL << 26 : 0);
	pid = (w1 & 7) == 7 ? (w1 >> 56) & 0xFF : pids[w1 & 7];
	device = (w1 >> 5) & 3 ? 0 : (w1 >> 3) & 3;
	endpoint = (w1 >> 9) & 3 ? 0 : (w1 >> 7) & 3;
	if (pid == PID_SETUP)
		maxlen = 7;
	else if (maybe(w1, 18, 4))
		maxlen = 0x7FF;
	else
		maxlen = (w1 >> 12) & 63;
	out[0] = uhci_link(w0 & 0xffffffffULL);
	out[1] = (uint32_t)ctrl;
	out[2] = (uint32_t)(pid | device << 8 | endpoint << 15 | ((w1 >> 11) & 1) << 19 | maxlen << 21);
	out[3] = (uint32_t)(scratch_base + ((w1 >> 24) & (LAYOUT_SIZE - 1) & ~0x3FULL));
}

static void fill_uhci(uint64_t seed, volatile uint32_t *dw)
{
	for (uint64_t page = 0; page < 4; page += 2)
		for (uint64_t e = 0; e < PAGE_BYTES / 4; e++) {
			uint64_t d = page * PAGE_BYTES / 4 + e;

			dw[d] = uhci_link(random_word(seed, d) & 0xffffffffULL);
		}
	for (uint64_t page = 1; page < 4; page += 2)
		for (uint64_t c = page * PAGE_BYTES / 16; c < (page + 1) * PAGE_BYTES / 16; c++) {
			uint64_t w0 = random_word(seed, STRUCT_WORDS + 2 * c), w1 = random_word(seed, STRUCT_WORDS + 2 * c + 1);

			if (c % 8 == 0) {
				dw[4 * c] = uhci_link(w0 & 0xffffffffULL);
				dw[4 * c + 1] = uhci_link(w0 >> 32);
				dw[4 * c + 2] = (uint32_t)w1;
				dw[4 * c + 3] = (uint32_t)(w1 >> 32);
			} else {
				uhci_td(w0, w1, dw + 4 * c);
			}
		}
}

#define EHCI_QH_FIRST 0x1000ULL
#define EHCI_QTD_FIRST 0x3000ULL

static uint32_t ehci_qtd_pointer(uint64_t word, unsigned terminate_bits)
{
	return (uint32_t)((scratch_base + EHCI_QTD_FIRST + ((word >> 8) & 127) * 32) | (maybe(word, 0, terminate_bits) ? 1 : 0));
}

static uint32_t ehci_link(uint64_t word)
{
	uint64_t kind = !maybe(word, 4, 3) ? 2 : ((word >> 16) & 3) << 1;

	return (uint32_t)((scratch_base + EHCI_QH_FIRST + ((word >> 8) & 127) * 64) | kind | (maybe(word, 0, 4) ? 1 : 0));
}

static uint32_t ehci_qtd_token(uint64_t word)
{
	uint64_t pid = (word >> 4) % 3, total;

	if (pid == 2)
		total = 8;
	else
		total = maybe(word, 15, 2) ? (word >> 8) & 127 : (word >> 8) & 63;
	return (uint32_t)(pid << 8 | 3ULL << 10 | total << 16 | ((word >> 16) & 1) << 15 | ((word >> 17) & 1) << 31 |
			  (maybe(word, 0, 4) ? 0 : 0x80));
}

static void ehci_buffers(uint64_t word, volatile uint32_t *out)
{
	out[0] = (uint32_t)(scratch_base + ((word >> 20) & (LAYOUT_SIZE - 1) & ~0x3FULL));
	for (unsigned i = 0; i < 4; i++)
		out[1 + i] = (uint32_t)(scratch_base + ((word >> (32 + 2 * i)) & 3) * PAGE_BYTES);
}

static void ehci_qh(const uint64_t *w, volatile uint32_t *out)
{
	uint64_t device = (w[0] >> 5) & 3 ? 0 : (w[0] >> 3) & 3;
	uint64_t endpoint = (w[0] >> 9) & 3 ? 0 : (w[0] >> 7) & 3;
	uint64_t speed = !maybe(w[0], 11, 2) ? 2 : (w[0] >> 13) & 3;
	static const uint64_t maxpackets[] = { 8, 64, 512, 64 };
	uint64_t head = maybe(w[0], 17, 2) ? 1ULL << 15 : 0;
	uint64_t smask = maybe(w[0], 24, 1) ? 0 : (w[0] >> 25) & 0xFF;

	out[0] = ehci_link(w[1] & 0xffffffffULL);
	out[1] = (uint32_t)(device | endpoint << 8 | speed << 12 | ((w[0] >> 19) & 1) << 14 | head |
			    maxpackets[(w[0] >> 15) & 3] << 16 | ((w[0] >> 20) & 15) << 28);
	out[2] = (uint32_t)(smask | (1 + (w[0] >> 33) % 3) << 30);
	out[3] = ehci_qtd_pointer(w[1] >> 32, 8) & ~1U;
	out[4] = ehci_qtd_pointer(w[2] & 0xffffffffULL, 3);
	out[5] = ehci_qtd_pointer(w[2] >> 40, 1);
	out[6] = maybe(w[0], 40, 2) ? ehci_qtd_token(w[2] >> 32) : 0;
	ehci_buffers(w[3], out + 7);
	for (unsigned i = 12; i < 16; i++)
		out[i] = 0;
}

static void fill_ehci(uint64_t seed, volatile uint32_t *dw)
{
	for (uint64_t d = 0; d < PAGE_BYTES / 4; d++)
		dw[d] = ehci_link(random_word(seed, d) & 0xffffffffULL);
	for (uint64_t q = 0; q < 128; q++) {
		uint64_t c = (EHCI_QH_FIRST + q * 64) / 16, w[4];

		for (unsigned j = 0; j < 4; j++)
			w[j] = random_word(seed, STRUCT_WORDS + 2 * c + j);
		ehci_qh(w, dw + 4 * c);
	}
	for (uint64_t t = 0; t < 128; t++) {
		uint64_t c = (EHCI_QTD_FIRST + t * 32) / 16;
		uint64_t w0 = random_word(seed, STRUCT_WORDS + 2 * c), w1 = random_word(seed, STRUCT_WORDS + 2 * c + 1);

		dw[4 * c] = ehci_qtd_pointer(w0 & 0xffffffffULL, 2);
		dw[4 * c + 1] = ehci_qtd_pointer(w0 >> 32, 1);
		dw[4 * c + 2] = ehci_qtd_token(w1 & 0xffffffffULL);
		ehci_buffers(w1 >> 8, dw + 4 * c + 3);
	}
}

#define E1000_BUFFERS 0x2000ULL

static void e1000_descriptor(uint64_t w0, uint64_t w1, volatile uint32_t *out)
{
	uint64_t address, length, command, special;

	if ((w0 & 7) == 7) { /* context: IPv4 + TCP offsets, TSE at random, an MSS */
		uint64_t tucmd = TX_DEXT | (((w1 >> 2) & 1) ? TX_IC_TSE : 0) | (w1 & 3);

		out[0] = 14 | 24 << 8 | 33 << 16;
		out[1] = 34 | 50 << 8;
		out[2] = (uint32_t)(((w1 >> 8) & 0x1FFF) | tucmd << 24);
		out[3] = (uint32_t)(54 << 8 | (64 + ((w1 >> 24) & 0x7FF) % 1397) << 16);
		return;
	}
	address = scratch_base + E1000_BUFFERS + ((w0 >> 8) & 0x7FE);
	length = 14 + ((w0 >> 20) & 0x7FF) % 1501;
	command = TX_IFCS | TX_RS | (maybe(w0, 32, 2) ? 0 : TX_EOP);
	command |= (maybe(w0, 34, 3) ? TX_VLE : 0) | ((w0 >> 37) & 1) * TX_IC_TSE;
	special = (w1 >> 16) & 0xFFFF;
	out[0] = (uint32_t)address;
	out[1] = (uint32_t)(address >> 32);
	if ((w0 & 7) < 4) {
		out[2] = (uint32_t)(length | command << 24);
		out[3] = (uint32_t)(special << 16);
	} else {
		out[2] = (uint32_t)(length | 1ULL << 20 | (command | TX_DEXT) << 24);
		out[3] = (uint32_t)(((w1 >> 8) & 3) << 8 | special << 16);
	}
}

static void fill_e1000(uint64_t seed, volatile uint32_t *dw)
{
	for (uint64_t c = 0; c < E1000_BUFFERS / 16; c++)
		e1000_descriptor(random_word(seed, STRUCT_WORDS + 2 * c), random_word(seed, STRUCT_WORDS + 2 * c + 1),
				 dw + 4 * c);
	fill_random_tail(seed, dw, E1000_BUFFERS);
}

#define VIRTIO_QUEUE 256ULL
#define VIRTIO_CHAIN 3ULL
#define VIRTIO_CHAINS (VIRTIO_QUEUE / VIRTIO_CHAIN)
#define VIRTIO_AVAIL_WORDS 0x400ULL
#define VIRTIO_HEADERS 0x3000ULL
#define VIRTIO_STATUS 0x3600ULL
#define VIRTIO_DATA 0x3800ULL
#define BLK_OUTHDR 16ULL
#define BLK_SECTOR 512ULL

static void virtio_put(volatile uint32_t *out, uint64_t address, uint64_t length, uint64_t flags_next)
{
	out[0] = (uint32_t)address;
	out[1] = (uint32_t)(address >> 32);
	out[2] = (uint32_t)length;
	out[3] = (uint32_t)flags_next;
}

/* A request chain as virtio-blk parses one: readable header -> data (writable for IN and GET_ID) -> status. */
static void virtio_request(uint64_t chain, uint64_t type, uint64_t word, volatile uint32_t *dw)
{
	uint64_t first = VIRTIO_CHAIN * chain, blocks = 1 + ((word >> 20) & 1);
	uint64_t data = scratch_base + VIRTIO_DATA + BLK_SECTOR * (((word >> 21) & 3) % (5 - blocks));
	uint64_t writable = (type == 0 || type == 8) ? 2 : 0;

	virtio_put(dw + 4 * first, scratch_base + VIRTIO_HEADERS + BLK_OUTHDR * chain, BLK_OUTHDR, 1 | (first + 1) << 16);
	virtio_put(dw + 4 * (first + 1), data, BLK_SECTOR * blocks, 1 | writable | (first + 2) << 16);
	virtio_put(dw + 4 * (first + 2), scratch_base + VIRTIO_STATUS + chain, 1, 2);
}

static void fill_virtio(uint64_t seed, volatile uint32_t *dw)
{
	static const uint64_t blk_types[] = { 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 4, 8 };
	uint64_t head = random_word(seed, VIRTIO_AVAIL_WORDS);
	volatile uint16_t *avail = (volatile uint16_t *)(dw + PAGE_BYTES / 4);

	for (uint64_t c = 0; c < LAYOUT_DWORDS; c++)
		dw[c] = 0;
	for (uint64_t c = 0; c < VIRTIO_QUEUE; c++) { /* every descriptor at random, most chains then requests */
		uint64_t w0 = random_word(seed, STRUCT_WORDS + 2 * c), w1 = random_word(seed, STRUCT_WORDS + 2 * c + 1);
		uint64_t flags = (w0 & 1) | ((w0 >> 1) & 1) << 1, address, length;

		if (maybe(w0, 2, 5)) { /* an indirect table: descriptors of the table itself */
			flags = 4;
			address = scratch_base + ((w1 >> 8) & 0xFF) * 16;
			length = 16 * (1 + ((w1 >> 16) & 7));
		} else {
			address = scratch_base + VIRTIO_HEADERS + ((w1 >> 8) & 0x7F) * 16;
			length = 16 + ((w1 >> 16) & 0x1F0);
		}
		virtio_put(dw + 4 * c, address, length, flags | ((c + 1 + ((w0 >> 8) & 3)) % VIRTIO_QUEUE) << 16);
	}
	for (uint64_t chain = 0; chain < VIRTIO_CHAINS; chain++) {
		uint64_t cell = VIRTIO_HEADERS / 16 + chain;
		uint64_t word = random_word(seed, STRUCT_WORDS + 2 * cell), shape = random_word(seed, STRUCT_WORDS + 2 * cell + 1);
		uint64_t type = (word & 15) < 14 ? blk_types[word & 15] : (word >> 32) & 0xFF;

		dw[4 * cell] = (uint32_t)type;
		dw[4 * cell + 2] = (uint32_t)((word >> 8) & 0xFF);
		if (!maybe(shape, 0, 5))
			virtio_request(chain, type, shape, dw);
	}
	avail[0] = (uint16_t)(head & 1);
	avail[1] = (uint16_t)(1 + ((head >> 8) & 0xFF));
	for (uint64_t j = 0; j < VIRTIO_QUEUE; j++) {
		uint64_t word = random_word(seed, VIRTIO_AVAIL_WORDS + 1 + j);

		avail[2 + j] = (uint16_t)(maybe(word, 8, 5) ? word & 0xFF : VIRTIO_CHAIN * ((word >> 16) % VIRTIO_CHAINS));
	}
	avail[2 + VIRTIO_QUEUE] = (uint16_t)((head >> 16) & 0xFF);
	fill_random_tail(seed, dw, VIRTIO_DATA);
}

static void fill_nvme(uint64_t seed, volatile uint32_t *dw)
{
	static const uint64_t opcodes[] = { 0x06, 0x06, 0x02, 0x09, 0x0A, 0x05, 0x01, 0x04,
					    0x00, 0x0C, 0x08, 0x02, 0x01, 0x08, 0x09, 0x05 };

	for (uint64_t e = 0; e < 128; e++) {
		uint64_t c = 4 * e, w0 = random_word(seed, STRUCT_WORDS + 2 * c);
		uint64_t w1 = random_word(seed, STRUCT_WORDS + 2 * c + 1), w2 = random_word(seed, STRUCT_WORDS + 2 * c + 2);
		uint64_t opcode = opcodes[w0 & 15], nsid, prp1, prp2 = scratch_base + ((w1 >> 16) & 3) * PAGE_BYTES;
		volatile uint32_t *out = dw + 16 * e;

		if (maybe(w0, 4, 4))
			nsid = 0xffffffffULL;
		else
			nsid = !maybe(w0, 8, 2) ? 1 : (w0 >> 10) & 3;
		if (opcode == 0x01) /* create I/O SQ: a page of entries */
			prp1 = scratch_base + ((w1 >> 4) & 1) * PAGE_BYTES;
		else if (opcode == 0x05) /* create I/O CQ */
			prp1 = scratch_base + 2 * PAGE_BYTES;
		else
			prp1 = scratch_base + 3 * PAGE_BYTES + (maybe(w1, 12, 2) ? ((w1 >> 4) & 0xFF) * 4 : 0);
		out[0] = (uint32_t)(opcode | ((w0 >> 16) & 0xFFFF) << 16);
		out[1] = (uint32_t)nsid;
		for (unsigned i = 2; i < 6; i++)
			out[i] = 0;
		out[6] = (uint32_t)prp1;
		out[7] = (uint32_t)(prp1 >> 32);
		out[8] = (uint32_t)prp2;
		out[9] = (uint32_t)(prp2 >> 32);
		out[10] = (uint32_t)((w2 & 3) | ((w2 >> 8) & 0x3F) << 16);
		out[11] = (uint32_t)(1 | ((w2 >> 16) & 3) << 16);
		out[12] = (uint32_t)((w2 >> 24) & 7);
		out[13] = out[14] = out[15] = 0;
	}
	for (uint64_t d = 2 * PAGE_BYTES / 4; d < 3 * PAGE_BYTES / 4; d++) /* the completion queue */
		dw[d] = 0;
	fill_random_tail(seed, dw, 3 * PAGE_BYTES);
}

#define MFI_FRAMES 192ULL
#define MFI_DATA 0x3000ULL

static void fill_megasas(uint64_t seed, volatile uint32_t *dw)
{
	static const uint64_t commands[] = { 3, 4, 5, 5, 1, 2, 6, 0 };
	static const uint64_t dcmds[] = { 0x01010000, 0x01020100, 0x02010000, 0x03010000,
					  0x01040100, 0x04010000, 0x03020000, 0x02020000 };
	static const uint64_t scsi_opcodes[] = { 0x00, 0x12, 0x25, 0x28, 0x2A, 0x1A, 0x03, 0xA0 };
	static const uint64_t cdb_lens[] = { 6, 10, 12, 16 };

	for (uint64_t f = 0; f < MFI_FRAMES; f++) {
		uint64_t w0 = random_word(seed, STRUCT_WORDS + 8 * f), w1 = random_word(seed, STRUCT_WORDS + 8 * f + 1);
		uint64_t command = commands[w0 & 7], target = (w0 >> 3) & 3 ? 0 : (w0 >> 5) & 3;
		uint64_t sges = !maybe(w0, 9, 2) ? 1 : (w0 >> 11) & 3;
		uint64_t flags = ((w0 >> 13) & 1) * 2 | (((w0 >> 14) & 1) ? 0x10 : 0x08);
		uint64_t data_len = 512 * (1 + ((w0 >> 15) & 7)), data = scratch_base + MFI_DATA;
		uint64_t sense = scratch_base + MFI_DATA + ((w1 >> 8) & 0x3F) * 64;
		uint32_t frame[16] = { 0 };
		unsigned n = 6;

		frame[0] = (uint32_t)(command | (((w0 >> 18) & 1) ? 18 : 0) << 8);
		frame[1] = (uint32_t)(target | cdb_lens[(w0 >> 7) & 3] << 16 | sges << 24);
		frame[2] = (uint32_t)(w0 >> 32);
		frame[4] = (uint32_t)flags;
		frame[5] = (uint32_t)data_len;
		if (command == 3 || command == 4) { /* sense address, a CDB, the SGL at 48 */
			frame[6] = (uint32_t)sense;
			frame[8] = (uint32_t)(scsi_opcodes[w1 & 7] | ((w1 >> 16) & 0xFFFFFF) << 8);
			frame[9] = (uint32_t)((w1 >> 40) & 0xFF);
			n = 12;
		} else if (command == 5) { /* opcode, mailbox, the SGL at 40 */
			frame[6] = (uint32_t)dcmds[w1 & 7];
			frame[7] = (uint32_t)((w1 >> 8) & 0xFF);
			n = 10;
		} else if (command == 1 || command == 2) { /* sense address, a small LBA */
			frame[6] = (uint32_t)sense;
			frame[8] = (uint32_t)((w1 >> 8) & 0xFF);
			n = 10;
		} else if (command == 6) { /* the context and address of another frame to abort */
			frame[6] = (uint32_t)w1;
			frame[8] = (uint32_t)(scratch_base + ((w1 >> 32) % MFI_FRAMES) * 64);
			n = 10;
		} else { /* init: the queue info in page 3 */
			frame[6] = (uint32_t)(scratch_base + MFI_DATA + ((w1 >> 8) & 0x3F) * 64);
			n = 10;
		}
		frame[n] = (uint32_t)data;
		if (flags & 2)
			frame[n + 2] = (uint32_t)data_len;
		else
			frame[n + 1] = (uint32_t)data_len;
		for (unsigned i = 0; i < 16; i++)
			dw[16 * f + i] = frame[i];
	}
	fill_random_tail(seed, dw, MFI_DATA);
}

#define AHCI_TABLES 0x1000ULL
#define AHCI_DATA 0x3000ULL

static void fill_ahci(uint64_t seed, volatile uint32_t *dw)
{
	static const uint64_t ata_commands[] = { 0xEC, 0x25, 0x35, 0xC8, 0xCA, 0xE7, 0x60, 0x61,
						 0xA0, 0xEF, 0x2F, 0xA1, 0x20, 0x30, 0xEA, 0x00 };
	static const uint64_t scsi_opcodes[] = { 0x00, 0x12, 0x25, 0x28, 0x2A, 0x1A, 0x03, 0xA0 };

	for (uint64_t h = 0; h < 128; h++) { /* command headers */
		uint64_t word = random_word(seed, STRUCT_WORDS + 4 * h);
		uint64_t flags = 5 | (maybe(word, 0, 3) ? 0x20 : 0) | ((word >> 3) & 1) << 6 | ((word >> 4) & 1) << 7;
		uint64_t prdtl = 1 + (maybe(word, 8, 1) ? (word >> 5) & 7 : (word >> 5) & 1);
		uint64_t table = scratch_base + AHCI_TABLES + ((word >> 16) & 31) * 256;

		dw[8 * h] = (uint32_t)(flags | prdtl << 16);
		dw[8 * h + 1] = 0;
		dw[8 * h + 2] = (uint32_t)table;
		dw[8 * h + 3] = (uint32_t)(table >> 32);
		for (unsigned i = 4; i < 8; i++)
			dw[8 * h + i] = 0;
	}
	for (uint64_t t = 0; t < 32; t++) { /* command tables */
		uint64_t c = (AHCI_TABLES + 256 * t) / 16;
		uint64_t w0 = random_word(seed, STRUCT_WORDS + 2 * c), w1 = random_word(seed, STRUCT_WORDS + 2 * c + 1);
		volatile uint32_t *out = dw + 4 * c;

		for (unsigned i = 0; i < 32; i++)
			out[i] = 0;
		out[0] = (uint32_t)(0x27 | 0x80 << 8 | ata_commands[w0 & 15] << 16 | ((w0 >> 8) & 0xFF) << 24);
		out[1] = (uint32_t)(((w0 >> 16) & 0xFF) | 0x40ULL << 24);
		out[3] = (uint32_t)(1 + ((w0 >> 24) & 7));
		out[16] = (uint32_t)(scsi_opcodes[w1 & 7] | ((w1 >> 8) & 0xFF) << 16);
		for (unsigned e = 0; e < 8; e++) {
			uint64_t data = scratch_base + AHCI_DATA + e * 512;

			out[32 + 4 * e] = (uint32_t)data;
			out[32 + 4 * e + 1] = (uint32_t)(data >> 32);
			out[32 + 4 * e + 2] = 0;
			out[32 + 4 * e + 3] = (uint32_t)(511 | ((w1 >> (16 + e)) & 1) << 31);
		}
	}
	fill_random_tail(seed, dw, AHCI_DATA);
}

/* ---- ehci_msd: an async schedule that enumerates a USB stick and runs SCSI on it
 * (only the ehci-msd recipe names it; keep identical to model/layouts/ehci_msd.py) ---- */

#define MSD_QTD_AREA 0x1000U
#define MSD_BULK_QTD_AREA 0x1800U /* slot k: OUT qTDs at +0x100k, IN qTDs 0x80 after */
#define MSD_SETUP_AREA 0x2000U
#define MSD_CBW_AREA 0x2800U
#define MSD_DATA_AREA 0x3000U
#define MSD_CSW_AREA 0x3800U
#define MSD_CONTROL_DATA 0x3C00U
#define MSD_SLOTS 4U
#define MSD_NONE 0U
#define MSD_IN 1U
#define MSD_OUT 2U

struct msd_schedule {
	uint8_t memory[LAYOUT_SIZE];
	unsigned qtds, setups;
};

/* an active qTD at `at` (0: the next free one of the control area), chained by msd_queue_head; its offset */
static unsigned msd_qtd(struct msd_schedule *s, unsigned pid, unsigned length, unsigned buffer, unsigned toggle,
			unsigned at)
{
	uint64_t page = scratch_base + MSD_DATA_AREA;

	if (!at)
		at = MSD_QTD_AREA + 32 * s->qtds++;
	put_le(s->memory + at, 1, 4);
	put_le(s->memory + (at + 4), 1, 4);
	put_le(s->memory + (at + 8), 0x80U | pid << 8 | 3U << 10 | (uint64_t)length << 16 | (toggle ? 1ULL << 31 : 0), 4);
	put_le(s->memory + (at + 12), scratch_base + buffer, 4);
	for (unsigned i = 0; i < 4; i++)
		put_le(s->memory + (at + 16 + 4 * i), page, 4);
	return at;
}

static void msd_request(uint8_t *out, unsigned kind, unsigned code, unsigned value, unsigned index, unsigned length)
{
	out[0] = (uint8_t)kind, out[1] = (uint8_t)code;
	out[2] = (uint8_t)value, out[3] = (uint8_t)(value >> 8);
	out[4] = (uint8_t)index, out[5] = (uint8_t)(index >> 8);
	out[6] = (uint8_t)length, out[7] = (uint8_t)(length >> 8);
}

/* SETUP, the IN data stage wLength asks for, the status stage: appended to qtds, their number returned */
static unsigned msd_control(struct msd_schedule *s, const uint8_t *request, unsigned *qtds)
{
	unsigned length = request[6] | (unsigned)request[7] << 8, at = MSD_SETUP_AREA + 8 * s->setups++, n = 0;

	memcpy(s->memory + at, request, 8);
	qtds[n++] = msd_qtd(s, 2, 8, at, 0, 0);
	if (length)
		qtds[n++] = msd_qtd(s, 1, length, MSD_CONTROL_DATA, 1, 0);
	qtds[n++] = msd_qtd(s, length ? 0 : 1, 0, 0, 1, 0);
	return n;
}

static void msd_queue_head(struct msd_schedule *s, unsigned index, unsigned device, unsigned endpoint,
			   const unsigned *qtds, unsigned n, unsigned following)
{
	unsigned at = 64 * index, control = endpoint == 0;
	uint64_t epchar = device | endpoint << 8 | 2U << 12 | (control ? 1U << 14 : 0) | (index == 0 ? 1U << 15 : 0) |
			  (control ? 64U : 512U) << 16;

	for (unsigned i = 0; i + 1 < n; i++)
		put_le(s->memory + qtds[i], scratch_base + qtds[i + 1], 4);
	put_le(s->memory + at, (scratch_base + 64 * following) | 2, 4);
	put_le(s->memory + (at + 4), epchar, 4);
	put_le(s->memory + (at + 8), 1U << 30, 4);
	put_le(s->memory + (at + 12), 0, 4);
	put_le(s->memory + (at + 16), n ? scratch_base + qtds[0] : 1, 4);
	put_le(s->memory + (at + 20), 1, 4);
}

/* the CDB for the table entry word & 15, its length, direction and data bytes */
static void msd_command_block(uint64_t word, uint64_t detail, uint8_t *cdb, unsigned *cdb_length, unsigned *direction,
			      unsigned *data)
{
	static const unsigned commands[16][4] = {
		{ 0x12, 6, 36, MSD_IN },   { 0x00, 6, 0, MSD_NONE },   { 0x25, 10, 8, MSD_IN },	 { 0x28, 10, 512, MSD_IN },
		{ 0x2A, 10, 512, MSD_OUT }, { 0x03, 6, 18, MSD_IN },   { 0x1A, 6, 192, MSD_IN },	 { 0x5A, 10, 192, MSD_IN },
		{ 0xA0, 12, 64, MSD_IN },   { 0x9E, 16, 32, MSD_IN },   { 0x1B, 6, 0, MSD_NONE },	 { 0x35, 10, 0, MSD_NONE },
		{ 0x2F, 10, 0, MSD_NONE },  { 0x08, 6, 512, MSD_IN },   { 0x0A, 6, 512, MSD_OUT }, { 0x00, 16, 0, MSD_NONE },
	};
	static const uint8_t mode_pages[] = { 0x3F, 0x08, 0x1C, 0x0A, 0x01, 0x05, 0x2A, 0x00 };
	static const uint8_t vpd_pages[] = { 0x00, 0x80, 0x83, 0xB0 };
	const unsigned *entry = commands[word & 15];
	unsigned opcode = entry[0];
	uint64_t lba = (detail >> 16) & (((detail >> 12) & 15) == 0 ? 0xFFFFFFFFULL : 0xFFULL);

	memset(cdb, 0, 16);
	cdb[0] = (uint8_t)opcode;
	*cdb_length = entry[1], *data = entry[2], *direction = entry[3];
	if (opcode == 0x12) {
		cdb[4] = (uint8_t)*data;
		if (((detail >> 8) & 3) == 0)
			cdb[1] = 1, cdb[2] = vpd_pages[(detail >> 10) & 3];
	} else if (opcode == 0x03) {
		cdb[4] = (uint8_t)*data;
	} else if (opcode == 0x1A || opcode == 0x5A) {
		cdb[2] = (uint8_t)(mode_pages[(detail >> 8) & 7] | ((detail >> 11) & 3) << 6);
		if (opcode == 0x1A)
			cdb[4] = (uint8_t)*data;
		else
			put_be(cdb + 7, *data, 2);
	} else if (opcode == 0xA0) {
		put_be(cdb + 6, *data, 4);
	} else if (opcode == 0x9E) {
		cdb[1] = 0x10;
		put_be(cdb + 10, *data, 4);
	} else if (opcode == 0x28 || opcode == 0x2A || opcode == 0x2F) {
		put_be(cdb + 2, lba, 4);
		cdb[8] = 1;
	} else if (opcode == 0x08 || opcode == 0x0A) {
		put_be(cdb + 1, lba & 0x1FFFFF, 3);
		cdb[4] = 1;
	} else if (opcode == 0x1B) {
		cdb[4] = (uint8_t)((detail >> 8) & 3);
	} else if ((word & 15) == 15) {
		cdb[0] = (uint8_t)(detail >> 56);
		for (unsigned i = 0; i < 7; i++)
			cdb[1 + i] = (uint8_t)(detail >> (8 + 8 * i));
	}
}

/* slot `slot`'s queue heads from `first`: CBW (+ data out) on endpoint 2, data in + CSW on 1, then endpoint 0 */
static void msd_command_slot(struct msd_schedule *s, unsigned slot, unsigned first, unsigned device, uint64_t word,
			     uint64_t detail)
{
	uint8_t cdb[16], after[8];
	unsigned cdb_length, direction, data, out[2], into[2], control[3], n_out = 0, n_into = 0, n_control;
	uint32_t signature = 0x43425355U;
	unsigned cbw_bytes = 31, lun = 0, flags, buffer = MSD_DATA_AREA + 512 * slot, cbw = MSD_CBW_AREA + 64 * slot;
	uint8_t *p = s->memory + cbw;
	static const unsigned after_requests[4][5] = {
		{ 0xA1, 0xFE, 0, 0, 1 }, { 0x21, 0xFF, 0, 0, 0 }, { 0x02, 0x01, 0, 0x81, 0 }, { 0x21, 0xFF, 0, 0, 0 },
	};
	const unsigned *r = after_requests[(word >> 9) & 3];
	unsigned last = first + 2 == 1 + 3 * MSD_SLOTS, out_at = MSD_BULK_QTD_AREA + 0x100 * slot;

	msd_command_block(word, detail, cdb, &cdb_length, &direction, &data);
	flags = direction == MSD_IN ? 0x80 : 0;
	if (((word >> 4) & 7) == 0) { /* malformed: one CBW in eight */
		unsigned fault = (word >> 7) & 3;

		if (fault == 0)
			signature ^= 1U << ((word >> 16) & 31);
		else if (fault == 1)
			cbw_bytes = 30;
		else if (fault == 2)
			lun = 1;
		else
			flags ^= 0x80;
	}
	put_le(s->memory + cbw, signature, 4);
	put_le(s->memory + (cbw + 4), (word >> 32) & 0xFFFFF0FFULL, 4); /* bits 8-11 zero: a queue head's endpoint, 0 */
	put_le(s->memory + (cbw + 8), data, 4);
	p[12] = (uint8_t)flags, p[13] = (uint8_t)lun, p[14] = (uint8_t)cdb_length;
	memcpy(p + 15, cdb, 16);
	out[n_out++] = msd_qtd(s, 0, cbw_bytes, cbw, 0, out_at);
	if (direction == MSD_OUT)
		out[n_out++] = msd_qtd(s, 0, data, buffer, 1, out_at + 32);
	if (direction == MSD_IN)
		into[n_into++] = msd_qtd(s, 1, data, buffer, 0, out_at + 0x80);
	into[n_into] = msd_qtd(s, 1, 13, MSD_CSW_AREA + 64 * slot, n_into, out_at + 0x80 + 32 * n_into);
	n_into++;
	msd_request(after, r[0], r[1], r[2], r[3], r[4]);
	msd_queue_head(s, first, device, 2, out, n_out, first + 1);
	msd_queue_head(s, first + 1, device, 1, into, n_into, first + 2);
	n_control = msd_control(s, after, control);
	msd_queue_head(s, first + 2, device, 0, control, n_control, last ? 0 : first + 3);
}

static void fill_ehci_msd(uint64_t seed, volatile uint32_t *dw)
{
	static struct msd_schedule s;
	static const unsigned device_lengths[] = { 18, 8, 64, 18 };
	uint64_t choice = random_word(seed, STRUCT_WORDS);
	/* 4-127: the plain ehci layout's queue heads (devices 0-3) find no stick when a sweep refills the memory */
	unsigned device = 4 + (unsigned)((choice & 0x7F) % 124), enumerate[6], configure[12], n_enum, n_conf;
	uint8_t request[8];
	unsigned pick = (choice >> 8) & 3, string = (choice >> 10) & 3;

	memset(&s, 0, sizeof(s));
	msd_request(request, 0x80, 6, 0x0100, 0, device_lengths[(choice >> 12) & 3]);
	n_enum = msd_control(&s, request, enumerate);
	msd_request(request, 0x00, 5, device, 0, 0); /* SET_ADDRESS */
	n_enum += msd_control(&s, request, enumerate + n_enum);
	msd_request(request, 0x80, 6, 0x0200, 0, ((choice >> 7) & 1) ? 32 : 9);
	n_conf = msd_control(&s, request, configure);
	msd_request(request, 0x00, 9, 1, 0, 0); /* SET_CONFIGURATION 1 */
	n_conf += msd_control(&s, request, configure + n_conf);
	msd_request(request, 0xA1, 0xFE, 0, 0, 1); /* GET MAX LUN */
	n_conf += msd_control(&s, request, configure + n_conf);
	if (pick) { /* a string, the device qualifier, the BOS descriptor */
		if (pick == 1)
			msd_request(request, 0x80, 6, 0x0300 | string, 0, 64);
		else if (pick == 2)
			msd_request(request, 0x80, 6, 0x0600, 0, 10);
		else
			msd_request(request, 0x80, 6, 0x0F00, 0, 64);
		n_conf += msd_control(&s, request, configure + n_conf);
	}
	msd_queue_head(&s, 0, 0, 0, enumerate, n_enum, 1);
	msd_queue_head(&s, 1, device, 0, configure, n_conf, 2);
	for (unsigned slot = 0; slot < MSD_SLOTS; slot++)
		msd_command_slot(&s, slot, 2 + 3 * slot, device, random_word(seed, STRUCT_WORDS + 8 + slot),
				 random_word(seed, STRUCT_WORDS + 16 + slot));
	store_bytes(dw, s.memory, LAYOUT_SIZE);
}

/* ---- virtio_blk_req: virtio-blk requests of every type, named by recipes only (model/layouts/virtio_blk_req.py) ---- */
#define VBR_SLOTS 85ULL
#define VBR_AVAIL 0x1000ULL
#define VBR_TABLES 0x2810ULL
#define VBR_INDIRECT_SLOTS 42ULL
#define VBR_HEADERS 0x3000ULL
#define VBR_STATUS 0x3560ULL
#define VBR_SEGMENTS 0x35C0ULL
#define VBR_DATA 0x3C00ULL
#define VBR_CAPACITY (0x4000000ULL / 512)
#define VBR_ANY_TYPE 0xFFULL /* the type table's entry that takes a random 32-bit type */
#define VBR_BARRIER 0x80000000ULL

static uint64_t vbr_sector(uint64_t word, uint64_t blocks)
{
	uint64_t kind = (word >> 12) & 15;

	if (kind == 0)
		return VBR_CAPACITY + ((word >> 16) & 0xFFFF);
	if (kind == 1)
		return VBR_CAPACITY - 1;
	return ((word >> 16) & 0x1FFFF) % (VBR_CAPACITY - blocks);
}

struct vbr_part {
	uint64_t address, length, flags;
};

static void fill_virtio_blk_req(uint64_t seed, volatile uint32_t *dw)
{
	static const uint64_t types[] = { 0, 0, 0, 1, 1, 1, 4, 8, 11, 11, 13, 13, 2, 10, 5, VBR_ANY_TYPE };
	uint64_t previous = 0, next_sector = 0, head;
	int has_previous = 0;
	volatile uint16_t *avail = (volatile uint16_t *)(dw + VBR_AVAIL / 4);

	for (uint64_t c = 0; c < LAYOUT_DWORDS; c++)
		dw[c] = 0;
	for (uint64_t j = 0; j < VBR_SLOTS; j++) {
		uint64_t w0 = random_word(seed, STRUCT_WORDS + 6 * j), w1 = random_word(seed, STRUCT_WORDS + 6 * j + 1);
		int follows = has_previous && previous <= 1 && ((w0 >> 4) & 1);
		uint64_t type = follows ? previous : types[w0 & 15], plain, blocks = 1 + ((w0 >> 10) & 1), sector;
		uint64_t header = VBR_HEADERS + 16 * j, header_length, length, data;
		int whole = !maybe(w0, 46, 4);
		struct vbr_part parts[3];
		unsigned count = 0;

		if (!follows && type == VBR_ANY_TYPE)
			type = (w0 >> 32) & 0xFFFFFFFFULL;
		plain = type;
		if (maybe(w0, 5, 5))
			type |= VBR_BARRIER;
		sector = follows ? next_sector : vbr_sector(w0, blocks);
		previous = plain;
		has_previous = 1;
		next_sector = sector + blocks;
		dw[header / 4] = (uint32_t)type;
		dw[header / 4 + 2] = (uint32_t)sector;
		dw[header / 4 + 3] = (uint32_t)(sector >> 32);
		header_length = maybe(w0, 40, 6) ? (w1 >> 40) & 15 : 16;
		length = whole ? 512 * blocks : 1 + ((w1 >> 48) & 0x1FE);
		data = scratch_base + VBR_DATA + ((whole && blocks == 1 && ((w0 >> 11) & 1)) ? 512 : 0);
		parts[count++] = (struct vbr_part){ scratch_base + header, header_length, 0 };
		if (plain == 11 || plain == 13 || plain == 10) {
			uint64_t segment = VBR_SEGMENTS + 16 * j;
			uint64_t sectors = maybe(w1, 8, 4) ? (0xFFFFFF00ULL | (w1 & 0xFF)) : 1 + (w1 & 0xFF);
			uint64_t flags = ((w1 >> 12) & 1) | (maybe(w1, 13, 4) ? 2 : 0);
			uint64_t segment_sector = ((w1 >> 17) & 1) ? vbr_sector(w1 >> 16, 1) : vbr_sector(w0, 1);

			dw[segment / 4] = (uint32_t)segment_sector;
			dw[segment / 4 + 1] = (uint32_t)(segment_sector >> 32);
			dw[segment / 4 + 2] = (uint32_t)sectors;
			dw[segment / 4 + 3] = (uint32_t)flags;
			parts[count++] = (struct vbr_part){ scratch_base + segment, maybe(w1, 24, 3) ? 32 : 16, 0 };
		} else if (plain != 4 && plain != 5) {
			parts[count++] = (struct vbr_part){ data, length, plain == 1 ? 0 : 2 };
		}
		parts[count++] = (struct vbr_part){ scratch_base + VBR_STATUS + j, 1, 2 };
		if (j < VBR_INDIRECT_SLOTS && maybe(w1, 28, 4)) { /* its own table: next indices count from 0 */
			uint64_t table = VBR_TABLES + 48 * j;

			for (unsigned n = 0; n < count; n++)
				virtio_put(dw + table / 4 + 4 * n, parts[n].address, parts[n].length,
					   parts[n].flags | (n + 1 < count ? 1 : 0) | (uint64_t)(n + 1) << 16);
			virtio_put(dw + 4 * 3 * j, scratch_base + table, 16 * count, 4);
		} else {
			for (unsigned n = 0; n < count; n++)
				virtio_put(dw + 4 * (3 * j + n), parts[n].address, parts[n].length,
					   parts[n].flags | (n + 1 < count ? 1 : 0) | (3 * j + n + 1) << 16);
		}
	}
	head = random_word(seed, STRUCT_WORDS + 6 * VBR_SLOTS);
	avail[0] = (uint16_t)(head & 1);
	avail[1] = (uint16_t)(16 + (head >> 8) % (VBR_SLOTS - 15));
	for (uint64_t k = 0; k < VIRTIO_QUEUE; k++)
		avail[2 + k] = (uint16_t)(k < avail[1] ? 3 * k : 0);
	avail[2 + VIRTIO_QUEUE] = (uint16_t)((head >> 16) & 0xFF);
	fill_random_tail(seed, dw, VBR_DATA);
}

/* ---- megasas_io: keep identical to model/layouts/megasas_io.py ---- */

#define MIO_QINFO 0x40ULL
#define MIO_PRODUCER 0x60ULL
#define MIO_CONSUMER 0x64ULL
#define MIO_SENSE 0x80ULL
#define MIO_SENSE_BYTES 32ULL
#define MIO_FIRST_FRAME 0x100ULL
#define MIO_FRAME_BYTES 128ULL
#define MIO_FRAMES 62ULL
#define MIO_DATA 0x2000ULL
#define MIO_DATA_END 0x4000ULL
#define MIO_REPLY_QUEUE 0x2000ULL
#define MIO_REPLY_ENTRIES 64ULL
#define MIO_CONTEXT_BASE 0x1000ULL
#define MIO_BLOCK 512ULL
#define MIO_SGL64 0x02ULL
#define MIO_SENSE64 0x04ULL
#define MIO_WRITE 0x08ULL
#define MIO_READ 0x10ULL
#define MIO_IEEE 0x20ULL
enum { MIO_BROKEN_COMMAND, MIO_BROKEN_TARGET, MIO_BROKEN_CDB_LEN, MIO_NO_SGE, MIO_MANY_SGES, MIO_NULL_SGE,
       MIO_SHORT_SGL, MIO_LONG_SGL };

#define MIO_MODE_SELECT_LIST (-2) /* a MODE SELECT: its parameter list in the frame's tail (mio_mode_select) */
#define MIO_LIST_AT 64ULL
#define MIO_HELD_SLOT 0ULL /* always a CTRL_EVENT_WAIT, held until an abort names it */
#define MIO_ABORTING_SLOT 1ULL /* always an abort of it */

struct mio_scsi {
	unsigned char head[14];
	unsigned head_len, cdb_len;
	int data_len; /* -1: a READ/WRITE of 1-8 blocks */
	int out;
};

static const struct mio_scsi mio_scsi_commands[] = {
	{ { 0x00 }, 1, 6, 0, 0 },
	{ { 0x12, 0x00, 0x00, 0x00, 0x60 }, 5, 6, 96, 0 },
	{ { 0x12, 0x01, 0x00, 0x00, 0xfc }, 5, 6, 252, 0 },
	{ { 0x12, 0x01, 0x80, 0x00, 0xfc }, 5, 6, 252, 0 },
	{ { 0x12, 0x01, 0x83, 0x00, 0xfc }, 5, 6, 252, 0 },
	{ { 0x12, 0x01, 0xb0, 0x00, 0xfc }, 5, 6, 252, 0 },
	{ { 0x12, 0x01, 0xb1, 0x00, 0xfc }, 5, 6, 252, 0 },
	{ { 0x12, 0x01, 0xb2, 0x00, 0xfc }, 5, 6, 252, 0 },
	{ { 0x03, 0x00, 0x00, 0x00, 0x12 }, 5, 6, 18, 0 },
	{ { 0x1a, 0x00, 0x3f, 0x00, 0xff }, 5, 6, 255, 0 },
	{ { 0x1a, 0x08, 0x08, 0x00, 0xff }, 5, 6, 255, 0 },
	{ { 0x5a, 0x00, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00 }, 9, 10, 512, 0 },
	{ { 0x25 }, 1, 10, 8, 0 },
	{ { 0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20 }, 14, 16, 32, 0 },
	{ { 0x08 }, 1, 6, -1, 0 },
	{ { 0x0a }, 1, 6, -1, 1 },
	{ { 0x28 }, 1, 10, -1, 0 },
	{ { 0x2a }, 1, 10, -1, 1 },
	{ { 0xa8 }, 1, 12, -1, 0 },
	{ { 0xaa }, 1, 12, -1, 1 },
	{ { 0x88 }, 1, 16, -1, 0 },
	{ { 0x8a }, 1, 16, -1, 1 },
	{ { 0x35 }, 1, 10, 0, 0 },
	{ { 0x2f }, 1, 10, 0, 0 },
	{ { 0xa0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00 }, 10, 12, 256, 0 },
	{ { 0x1b, 0x00, 0x00, 0x00, 0x01 }, 5, 6, 0, 0 },
	{ { 0x2b, 0x00, 0x00, 0x00, 0x00, 0x10 }, 6, 10, 0, 0 },
	{ { 0x41, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x01 }, 9, 10, 512, 1 },
	{ { 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18 }, 9, 10, 24, 1 },
	{ { 0x15, 0x10 }, 2, 6, MIO_MODE_SELECT_LIST, 1 },
	{ { 0x55, 0x10 }, 2, 10, MIO_MODE_SELECT_LIST, 1 },
	{ { 0x04 }, 1, 6, 0, 0 },
	{ { 0x43, 0, 0, 0, 0, 0, 0, 0, 0x0c }, 9, 10, 12, 0 },
	{ { 0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20 }, 14, 16, 32, 0 },
	{ { 0x01 }, 1, 6, 0, 0 },
};
#define MIO_SCSI_COMMANDS (sizeof(mio_scsi_commands) / sizeof(mio_scsi_commands[0]))

static const uint32_t mio_dcmds[][3] = { /* opcode, data bytes, mailbox byte 0 */
	{ 0x01010000, 2048, 0 }, { 0x01020100, 256, 0 }, { 0x01020200, 256, 0 }, { 0x01040100, 64, 0 },
	{ 0x01040500, 512, 0 },	 { 0x01050000, 0, 0 },	 { 0x01080101, 8, 0 },	 { 0x01080102, 0, 0x12 },
	{ 0x010C0100, 64, 0 },	 { 0x010E0201, 128, 0 }, { 0x01101000, 0, 3 },	 { 0x02010000, 512, 0 },
	{ 0x02010100, 512, 0 },	 { 0x02020000, 512, 0 }, { 0x03010000, 512, 0 }, { 0x03010100, 64, 1 },
	{ 0x03020000, 1024, 0 }, { 0x04010000, 4096, 0 }, { 0x08010200, 0, 0 },	 { 0x0100E100, 0, 0 },
	{ 0x01030100, 8, 0 },	 { 0x01040300, 512, 0 }, { 0x01060000, 0, 0 },	 { 0x02030100, 0, 0 },
	{ 0x03030000, 64, 0 },	 { 0x04020000, 0, 0 },	 { 0x05010000, 64, 0 },	 { 0x08000000, 0, 0 },
	{ 0x08010100, 0, 0 },	 { 0x010C0200, 64, 0 },	 { 0x01030000, 0, 0 },	 { 0x0DEAD000, 512, 0 },
};
#define MIO_DCMDS (sizeof(mio_dcmds) / sizeof(mio_dcmds[0]))

/* PLAN: every SCSI command, every DCMD, two LD reads, two LD writes, four aborts; a fill posts them in this
 * order from its rotation on (slot 1 on), one frame in eight any kind instead */
#define MIO_PLAN (MIO_SCSI_COMMANDS + MIO_DCMDS + 8)

static void mio_planned(uint64_t item, uint64_t *kind, uint64_t *pick)
{
	static const uint64_t tail[] = { 1, 1, 2, 2, 6, 6, 6, 6 };

	*pick = 0;
	if (item < MIO_SCSI_COMMANDS) {
		*kind = 3;
		*pick = item;
	} else if (item < MIO_SCSI_COMMANDS + MIO_DCMDS) {
		*kind = 5;
		*pick = item - MIO_SCSI_COMMANDS;
	} else {
		*kind = tail[item - MIO_SCSI_COMMANDS - MIO_DCMDS];
	}
}

/* a MODE SELECT the disk accepts, from `word`: the CDB at frame + 32, the list at frame + MIO_LIST_AT; its length */
static uint64_t mio_mode_select(uint8_t *frame, const struct mio_scsi *c, uint64_t word)
{
	int six = c->head[0] == 0x15;
	uint64_t at = MIO_LIST_AT + (six ? 4 : 8), length;

	if (word & 1) { /* a block descriptor: block length 4096 or 512 */
		frame[at - 1] = 8;
		put_be(frame + (at + 5), (word & 2) ? 4096 : MIO_BLOCK, 3);
		at += 8;
	}
	if (word & 4) { /* the caching page, write cache on or off */
		frame[at] = 0x08;
		frame[at + 1] = 0x12;
		frame[at + 2] = (word & 8) ? 4 : 0;
		at += 20;
	} else { /* the read-write error recovery page as MODE SENSE reports it */
		frame[at] = 0x01;
		frame[at + 1] = 0x0A;
		frame[at + 2] = 0x80;
		at += 12;
	}
	length = at - MIO_LIST_AT;
	memcpy(frame + 32, c->head, 2);
	if (six)
		frame[36] = (uint8_t)length;
	else
		put_be(frame + 39, length, 2);
	return length;
}

/* the SGL at `at`: `count` elements covering data_len bytes in the data pages */
static void mio_sgl(uint8_t *frame, uint64_t at, uint64_t flags, uint64_t data_len, uint64_t word, int broken,
		    uint64_t count)
{
	uint64_t covered = data_len > MIO_BLOCK ? data_len : MIO_BLOCK;
	uint64_t room, start, size, piece;

	if (broken == MIO_SHORT_SGL)
		covered = covered - MIO_BLOCK > MIO_BLOCK ? covered - MIO_BLOCK : MIO_BLOCK;
	else if (broken == MIO_LONG_SGL)
		covered += MIO_BLOCK;
	room = MIO_DATA_END - MIO_DATA - covered;
	start = scratch_base + MIO_DATA + ((word >> 2) & 15) * MIO_BLOCK % (room + 1);
	size = (flags & MIO_IEEE) ? 16 : (flags & MIO_SGL64) ? 12 : 8;
	piece = covered / count;
	for (uint64_t i = 0; i < count; i++) {
		uint64_t length = i < count - 1 ? piece : covered - piece * (count - 1);
		uint64_t address = broken == MIO_NULL_SGE && i == count - 1 ? 0 : start + piece * i;

		if (size == 8) {
			put_le(frame + (at + 8 * i), address, 4);
			put_le(frame + (at + 8 * i + 4), length, 4);
		} else {
			put_le(frame + (at + size * i), address, 8);
			put_le(frame + (at + size * i + 8), length, 4);
		}
	}
}

static void mio_frame(uint8_t *frame, uint64_t slot, uint64_t rotation, uint64_t w0, uint64_t w1, uint64_t w2)
{
	static const uint64_t kinds[] = { 3, 3, 3, 4, 4, 4, 1, 1, 2, 2, 5, 5, 5, 5, 5, 6 };
	static const uint64_t sgl_flags[] = { 0, MIO_SGL64, MIO_IEEE | MIO_SGL64, MIO_SGL64 };
	uint64_t kind, pick, command;
	int broken = maybe(w0, 4, 3) ? (int)((w0 >> 7) & 7) : -1;
	uint64_t flags = sgl_flags[(w0 >> 10) & 3] | ((w0 >> 12) & 1) * MIO_SENSE64;
	uint64_t sense = scratch_base + MIO_SENSE + ((w0 >> 13) & 3) * MIO_SENSE_BYTES;
	uint64_t target = 0, lun = 0, sges = 0, cdb_len = 0, data_len = 0;

	if (maybe(w0, 24, 3)) {
		kind = kinds[w0 & 15];
		pick = w1;
	} else {
		mio_planned((slot + rotation + MIO_PLAN - 1) % MIO_PLAN, &kind, &pick);
		if (kind == 3 && (w0 & 1))
			kind = 4;
	}
	command = kind;
	memset(frame, 0, MIO_FRAME_BYTES);
	if (slot == MIO_HELD_SLOT) {
		kind = command = 5;
		broken = -1;
	} else if (slot == MIO_ABORTING_SLOT) {
		kind = command = 6;
		broken = -1;
	}
	if ((kind == 3 || kind == 4) && mio_scsi_commands[pick % MIO_SCSI_COMMANDS].data_len == MIO_MODE_SELECT_LIST) {
		uint64_t size = (flags & MIO_IEEE) ? 16 : (flags & MIO_SGL64) ? 12 : 8;
		uint64_t address = scratch_base + MIO_FIRST_FRAME + MIO_FRAME_BYTES * slot + MIO_LIST_AT;

		data_len = mio_mode_select(frame, &mio_scsi_commands[pick % MIO_SCSI_COMMANDS], w1 >> 8);
		cdb_len = mio_scsi_commands[pick % MIO_SCSI_COMMANDS].cdb_len;
		if (broken == MIO_SHORT_SGL)
			data_len -= 4; /* the frame says less than the CDB */
		else if (broken == MIO_LONG_SGL)
			data_len += 8; /* or more */
		flags |= MIO_WRITE;
		put_le(frame + 24, sense, 4);
		sges = 1;
		put_le(frame + 48, broken == MIO_NULL_SGE ? 0 : address, size == 8 ? 4 : 8);
		put_le(frame + (size == 8 ? 52 : 56), data_len, 4);
	} else if (kind == 3 || kind == 4) {
		const struct mio_scsi *c = &mio_scsi_commands[pick % MIO_SCSI_COMMANDS];
		uint64_t word = w1 >> 8;

		memcpy(frame + 32, c->head, c->head_len);
		cdb_len = c->cdb_len;
		if (c->data_len < 0) {
			uint64_t blocks = 1 + (word & 7), lba = (word >> 8) & 0xFFFF;

			data_len = blocks * MIO_BLOCK;
			if (cdb_len == 6) {
				put_be(frame + 33, lba, 3);
				frame[36] = (uint8_t)blocks;
			} else if (cdb_len == 10) {
				put_be(frame + 34, lba, 4);
				put_be(frame + 39, blocks, 2);
			} else if (cdb_len == 12) {
				put_be(frame + 34, lba, 4);
				put_be(frame + 38, blocks, 4);
			} else {
				put_be(frame + 34, lba, 8);
				put_be(frame + 42, blocks, 4);
			}
		} else {
			data_len = (uint64_t)c->data_len;
		}
		flags |= c->out ? MIO_WRITE : MIO_READ;
		put_le(frame + 24, sense, 4);
		sges = 1 + w2 % 3;
		mio_sgl(frame, 48, flags, data_len, w2, broken, sges);
	} else if (kind == 1 || kind == 2) {
		uint64_t blocks = 1 + ((w1 >> 8) & 7);

		flags |= kind == 2 ? MIO_WRITE : MIO_READ;
		put_le(frame + 24, sense, 4);
		put_le(frame + 32, (w1 >> 16) & 0xFFFF, 4);
		sges = 1 + w2 % 3;
		mio_sgl(frame, 40, flags, blocks * MIO_BLOCK, w2, broken, sges);
		data_len = blocks;
	} else if (kind == 5) {
		static const uint32_t event_wait[3] = { 0x01040500, 512, 0 };
		const uint32_t *d = slot == MIO_HELD_SLOT ? event_wait : mio_dcmds[pick % MIO_DCMDS];

		data_len = d[1];
		flags |= MIO_READ;
		put_le(frame + 24, d[0], 4);
		frame[28] = (uint8_t)d[2];
		sges = 1;
		mio_sgl(frame, 40, flags, data_len, w2, broken, sges);
	} else {
		uint64_t other = slot == MIO_ABORTING_SLOT || ((w1 >> 8) & 1) ? MIO_HELD_SLOT : (w1 >> 9) % MIO_FRAMES;
		int wrong = broken >= 0 || (slot != MIO_ABORTING_SLOT && maybe(w1, 10, 2));

		put_le(frame + 24, MIO_CONTEXT_BASE + other + (wrong ? 1 : 0), 8); /* mfi_abort_frame's context */
		put_le(frame + 32, scratch_base + MIO_FIRST_FRAME + MIO_FRAME_BYTES * other, 8); /* and frame address */
	}
	if (broken == MIO_BROKEN_COMMAND) {
		command = 7 + (w2 >> 56) % 249;
	} else if (broken == MIO_BROKEN_TARGET) {
		target = 1 + ((w2 >> 56) & 7);
		lun = (w2 >> 60) & 1;
	} else if (broken == MIO_BROKEN_CDB_LEN) {
		cdb_len = 17 + ((w2 >> 56) & 15);
	} else if (broken == MIO_NO_SGE) {
		sges = 0;
	} else if (broken == MIO_MANY_SGES) {
		sges = 129 + ((w2 >> 56) & 63);
	}
	frame[0] = (uint8_t)command;
	frame[1] = ((w0 >> 15) & 1) ? MIO_SENSE_BYTES : 18;
	frame[4] = (uint8_t)target;
	frame[5] = (uint8_t)lun;
	frame[6] = (uint8_t)cdb_len;
	frame[7] = (uint8_t)sges;
	put_le(frame + 8, MIO_CONTEXT_BASE + slot, 8);
	put_le(frame + 16, flags | ((w0 >> 16) & 0xFF) << 16, 4);
	put_le(frame + 20, data_len, 4);
}

static void fill_megasas_io(uint64_t seed, volatile uint32_t *dw)
{
	uint8_t bytes[MIO_FRAME_BYTES];
	uint64_t word = random_word(seed, STRUCT_WORDS);

	memset(bytes, 0, sizeof(bytes)); /* the init frame, queue info, producer, consumer */
	put_le(bytes + 8, MIO_CONTEXT_BASE - 1, 8);
	put_le(bytes + 24, scratch_base + MIO_QINFO, 4);
	put_le(bytes + MIO_QINFO, (word & 1) ? 2 : 0, 4);
	put_le(bytes + (MIO_QINFO + 4), maybe(word, 4, 4) ? 0xFFFF : MIO_REPLY_ENTRIES, 4);
	put_le(bytes + (MIO_QINFO + 8), scratch_base + MIO_REPLY_QUEUE, 8);
	put_le(bytes + (MIO_QINFO + 16), scratch_base + MIO_PRODUCER, 8);
	put_le(bytes + (MIO_QINFO + 24), scratch_base + MIO_CONSUMER, 8);
	store_bytes(dw, bytes, MIO_FRAME_BYTES);
	for (uint64_t d = MIO_FRAME_BYTES / 4; d < MIO_FIRST_FRAME / 4; d++)
		dw[d] = 0; /* the sense buffers */
	for (uint64_t slot = 0; slot < MIO_FRAMES; slot++) {
		uint64_t at = MIO_FIRST_FRAME + MIO_FRAME_BYTES * slot, cell = at / 16;

		mio_frame(bytes, slot, (word >> 16) % MIO_PLAN, random_word(seed, STRUCT_WORDS + 2 * cell), random_word(seed, STRUCT_WORDS + 2 * cell + 1),
			  random_word(seed, STRUCT_WORDS + 2 * cell + 2));
		store_bytes(dw + at / 4, bytes, MIO_FRAME_BYTES);
	}
	fill_random_tail(seed, dw, MIO_DATA);
}

/* ---- frames QEMU's user network answers inside QEMU: keep identical to model/layouts/frames.py ----
 * The NIC layouts' (e1000e_net, virtio_net_modern) ARP, ICMP echo, DHCP and TCP frames from the guest. */
#define FRAME_ETH 14U
#define FRAME_IPV4 20U
#define FRAME_ARP_LENGTH (FRAME_ETH + 28U)
#define FRAME_BOOTP_MIN 576U
#define FRAME_DHCP_LENGTH (FRAME_ETH + FRAME_BOOTP_MIN)
#define FRAME_TCP_SYN 0x02U
#define FRAME_TCP_ACK_PSH 0x18U
static const uint8_t frame_guest_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static const uint8_t frame_slirp_mac[6] = { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 };
static const uint8_t frame_broadcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t frame_guest_ip[4] = { 10, 0, 2, 15 }, frame_gateway_ip[4] = { 10, 0, 2, 2 };
static const uint8_t frame_dns_ip[4] = { 10, 0, 2, 3 }, frame_any_ip[4] = { 0, 0, 0, 0 };
static const uint8_t frame_all_ip[4] = { 255, 255, 255, 255 };

/* the Internet checksum (RFC 1071), of `initial` (a one's complement sum so far) and data */
static uint16_t frame_checksum_from(uint64_t total, const uint8_t *data, unsigned length)
{
	for (unsigned i = 0; i + 1 < length; i += 2)
		total += (uint64_t)data[i] << 8 | data[i + 1];
	if (length % 2)
		total += (uint64_t)data[length - 1] << 8;
	while (total >> 16)
		total = (total & 0xffff) + (total >> 16);
	return (uint16_t)~total;
}

static uint16_t frame_checksum(const uint8_t *data, unsigned length)
{
	return frame_checksum_from(0, data, length);
}

/* Ethernet header from the guest's address; returns its length */
static unsigned frame_ethernet(uint8_t *frame, const uint8_t *destination, uint64_t ethertype)
{
	memcpy(frame, destination, 6);
	memcpy(frame + 6, frame_guest_mac, 6);
	put_be(frame + 12, ethertype, 2);
	return FRAME_ETH;
}

static void frame_ipv4(uint8_t *frame, uint64_t total, uint64_t ident, uint8_t protocol, const uint8_t *source,
		       const uint8_t *destination)
{
	uint8_t *ip = frame + FRAME_ETH;

	memset(ip, 0, FRAME_IPV4);
	ip[0] = 0x45;
	put_be(ip + 2, total, 2);
	put_be(ip + 4, ident, 2);
	ip[8] = 64;
	ip[9] = protocol;
	memcpy(ip + 12, source, 4);
	memcpy(ip + 16, destination, 4);
	put_be(ip + 10, frame_checksum(ip, FRAME_IPV4), 2);
}

/* an ARP packet from the guest asking for `target`; returns its length (42) */
static unsigned frame_arp(uint8_t *frame, const uint8_t *target, uint64_t operation, uint64_t hlen, uint64_t plen)
{
	unsigned n = frame_ethernet(frame, frame_broadcast, 0x0806);

	frame[n] = 0;
	frame[n + 1] = 1;
	frame[n + 2] = 8;
	frame[n + 3] = 0;
	frame[n + 4] = (uint8_t)hlen;
	frame[n + 5] = (uint8_t)plen;
	put_be(frame + n + 6, operation, 2);
	memcpy(frame + n + 8, frame_guest_mac, 6);
	memcpy(frame + n + 14, frame_guest_ip, 4);
	memset(frame + n + 18, 0, 6);
	memcpy(frame + n + 24, target, 4);
	return FRAME_ARP_LENGTH;
}

static unsigned frame_icmp_echo(uint8_t *frame, uint64_t word)
{
	unsigned payload = 8 + ((word >> 8) & 0x7F), at = FRAME_ETH + FRAME_IPV4;
	uint64_t ident = (word >> 16) & 0xFFFF;
	uint8_t *icmp = frame + at;

	frame_ethernet(frame, frame_slirp_mac, 0x0800);
	memset(icmp, 0, 8);
	icmp[0] = 8;
	put_be(icmp + 4, ident, 2);
	icmp[7] = (uint8_t)word;
	for (unsigned i = 0; i < payload; i++)
		icmp[8 + i] = (uint8_t)((word >> 32) + i);
	put_be(icmp + 2, frame_checksum(icmp, 8 + payload), 2);
	frame_ipv4(frame, FRAME_IPV4 + 8 + payload, ident ^ 0x5A5A, 1, frame_guest_ip, frame_gateway_ip);
	return at + 8 + payload;
}

static unsigned frame_dhcp_discover(uint8_t *frame, uint64_t word)
{
	unsigned at = FRAME_ETH + FRAME_IPV4, bootp_length = FRAME_BOOTP_MIN - FRAME_IPV4 - 8, o;
	uint8_t *udp = frame + at, *bootp = udp + 8;
	int request = maybe(word, 0, 2);

	frame_ethernet(frame, frame_broadcast, 0x0800);
	memset(bootp, 0, bootp_length);
	bootp[0] = 1;
	bootp[1] = 1;
	bootp[2] = 6;
	for (unsigned i = 0; i < 4; i++)
		bootp[4 + i] = (uint8_t)(word >> (32 + 8 * (3 - i)));
	memcpy(bootp + 28, frame_guest_mac, 6);
	o = 236;
	bootp[o++] = 99;
	bootp[o++] = 130;
	bootp[o++] = 83;
	bootp[o++] = 99;
	bootp[o++] = 53;
	bootp[o++] = 1;
	bootp[o++] = request ? 3 : 1;
	if (request) {
		bootp[o++] = 50;
		bootp[o++] = 4;
		memcpy(bootp + o, frame_guest_ip, 4);
		o += 4;
	}
	bootp[o] = 255;
	put_be(udp, 68, 2);
	put_be(udp + 2, 67, 2);
	put_be(udp + 4, 8 + bootp_length, 2);
	put_be(udp + 6, 0, 2);
	frame_ipv4(frame, FRAME_IPV4 + 8 + bootp_length, (word >> 8) & 0xFFFF, 17, frame_any_ip, frame_all_ip);
	return at + 8 + bootp_length;
}

/* a TCP segment from port 49153 to the gateway; `checksummed`: the TCP checksum over the pseudo header,
 * else left zero (for a NIC's offload) */
static unsigned frame_tcp_segment(uint8_t *frame, uint64_t word, uint64_t flags, unsigned payload, int checksummed)
{
	unsigned at = FRAME_ETH + FRAME_IPV4;
	uint8_t *tcp = frame + at;
	uint64_t sequence = (word >> 16) & 0xffffffffULL;

	frame_ethernet(frame, frame_slirp_mac, 0x0800);
	memset(tcp, 0, 20);
	put_be(tcp, 0xC001, 2);
	put_be(tcp + 2, 1024 + ((word >> 24) & 0x7FFF), 2);
	put_be(tcp + 4, sequence >> 16, 2);
	put_be(tcp + 6, sequence, 2);
	tcp[12] = 0x50;
	tcp[13] = (uint8_t)flags;
	tcp[14] = 0x10;
	for (unsigned i = 0; i < payload; i++)
		tcp[20 + i] = (uint8_t)((word >> 40) + 3 * i);
	if (checksummed) {
		uint64_t pseudo = 0;

		for (unsigned i = 0; i < 4; i += 2)
			pseudo += (uint64_t)(frame_guest_ip[i] << 8 | frame_guest_ip[i + 1]) +
				  (uint64_t)(frame_gateway_ip[i] << 8 | frame_gateway_ip[i + 1]);
		pseudo += 6 + 20 + payload;
		put_be(tcp + 16, frame_checksum_from(pseudo, tcp, 20 + payload), 2);
	}
	frame_ipv4(frame, FRAME_IPV4 + 20 + payload, word & 0xFFFF, 6, frame_guest_ip, frame_gateway_ip);
	return at + 20 + payload;
}

/* ---- the e1000e_net layout: keep identical to avocado_iofuzz/model/layouts/e1000e_net.py ----
 * Frames QEMU's user network answers (ARP, ICMP echo, DHCP; a TCP segment for TSO) behind a transmit
 * ring of legacy, context and extended data descriptors (page 0), a receive ring of packet-split
 * descriptors (page 1), the frames (page 2) and receive buffers (page 3). Only recipes name it. */
#define EN_TX_RING 0x0000ULL
#define EN_RX_RING 0x1000ULL
#define EN_FRAMES 0x2000ULL
#define EN_RX_BUFFERS 0x3000ULL
#define EN_SLOT 0x100ULL
#define EN_TX_DESCRIPTORS 256ULL
#define EN_RX_DESCRIPTORS 128ULL
#define EN_ETH FRAME_ETH
#define EN_IPV4 FRAME_IPV4
enum en_kind { EN_ARP, EN_ICMP, EN_DHCP, EN_TCP };
static const struct { enum en_kind kind; unsigned first; } en_frame_slots[] = {
	{ EN_ARP, 0 }, { EN_ARP, 1 }, { EN_ARP, 2 }, { EN_ARP, 3 }, { EN_ICMP, 4 },
	{ EN_ICMP, 5 }, { EN_ICMP, 6 }, { EN_ICMP, 7 }, { EN_DHCP, 8 }, { EN_TCP, 11 },
};
#define EN_FRAME_COUNT (sizeof(en_frame_slots) / sizeof(en_frame_slots[0]))
static uint8_t en_memory[LAYOUT_SIZE];

/* a slot's frame, or 0 when it stays random bytes (one in eight) */
static unsigned en_slot_frame(enum en_kind kind, unsigned first, uint64_t seed, uint8_t *frame)
{
	uint64_t word = random_word(seed, STRUCT_WORDS + 2 * ((EN_FRAMES + first * EN_SLOT) / 16));

	if (maybe(word, 61, 3))
		return 0;
	if (kind == EN_ARP) { /* who has 10.0.2.2 (10.0.2.3 one time in four), padded to the 60-byte minimum */
		unsigned n = frame_arp(frame, maybe(word, 0, 2) ? frame_dns_ip : frame_gateway_ip, 1, 6, 4);

		memset(frame + n, 0, 60 - n);
		return 60;
	}
	if (kind == EN_ICMP)
		return frame_icmp_echo(frame, word);
	if (kind == EN_DHCP)
		return frame_dhcp_discover(frame, word);
	return frame_tcp_segment(frame, word, FRAME_TCP_ACK_PSH, 64 + ((word >> 8) & 0x3FF) % 1088, 0);
}

static void en_descriptor(uint64_t d, uint64_t a, uint64_t b, uint64_t c, uint64_t e)
{
	uint8_t *at = en_memory + EN_TX_RING + 16 * d;

	put_le(at, a, 4);
	put_le(at + 4, b, 4);
	put_le(at + 8, c, 4);
	put_le(at + 12, e, 4);
}

/* the descriptors of the packet that starts at descriptor `first`; returns how many */
static unsigned en_tx_packet(uint64_t seed, uint64_t first, const unsigned *lengths)
{
	uint64_t w0 = random_word(seed, STRUCT_WORDS + 2 * first), w1 = random_word(seed, STRUCT_WORDS + 2 * first + 1);
	uint64_t style = (w0 >> 4) & 7, address, length, cut, vlan, special, at[2], size[2];
	unsigned pick, pieces, n = 0;
	enum en_kind kind;

	if (style == 7) { /* malformed */
		address = scratch_base + (w1 & (LAYOUT_SIZE - 1));
		en_descriptor(first, address, address >> 32, ((w1 >> 32) & 0xffff0000ULL) | ((w1 >> 16) & 0x3FFF),
			      w0 >> 32);
		return 1;
	}
	pick = (unsigned)((w0 & 0xF) % EN_FRAME_COUNT);
	kind = en_frame_slots[pick].kind;
	length = lengths[pick] ? lengths[pick] : 60 + (w1 & 0xFF);
	address = scratch_base + EN_FRAMES + en_frame_slots[pick].first * EN_SLOT;
	cut = (w0 >> 8) & 1 ? EN_ETH + (w0 >> 16) % (length - EN_ETH) : length;
	pieces = cut < length ? 2 : 1;
	at[0] = address;
	size[0] = cut < length ? cut : length;
	at[1] = address + cut;
	size[1] = length - cut;
	vlan = maybe(w0, 9, 3) ? TX_VLE : 0;
	special = (w1 >> 48) & 0xFFFF;
	if (style < 3) { /* legacy */
		uint64_t insert = (kind == EN_ICMP || kind == EN_TCP) ? (w0 >> 12) & 1 : 0;
		uint64_t sum_at = kind == EN_ICMP ? 36 : 50;

		for (unsigned p = 0; p < pieces; p++) {
			int last = p == pieces - 1;
			uint64_t command = TX_IFCS | TX_RS | (last ? TX_EOP | vlan | TX_IC_TSE * insert : 0);

			en_descriptor(first + p, at[p], at[p] >> 32, size[p] | sum_at << 16 | command << 24,
				      (EN_ETH + EN_IPV4) << 8 | special << 16);
		}
		return pieces;
	}
	{ /* a context descriptor, then extended data descriptors */
		uint64_t l4 = EN_ETH + EN_IPV4, header = l4 + 20, mss = 64 + ((w1 >> 41) & 0x1FF);
		uint64_t sum_at = kind == EN_DHCP ? l4 + 6 : kind == EN_TCP ? l4 + 16 : l4 + 2;
		int tso = kind == EN_TCP && !maybe(w1, 40, 1);
		uint64_t tucmd = TX_DEXT | TX_RS | 0x02 | (kind == EN_TCP ? 0x01 : 0) | (tso ? TX_IC_TSE : 0);
		uint64_t paylen = tso ? (length > header ? length - header : 0) : length;
		uint64_t popts = style != 6 ? 3 : (w1 >> 20) & 3;

		en_descriptor(first, EN_ETH | (EN_ETH + 10) << 8 | (l4 - 1) << 16, l4 | sum_at << 8,
			      (paylen & 0xFFFFF) | tucmd << 24, header << 8 | mss << 16);
		n = 1;
		for (unsigned p = 0; p < pieces; p++) {
			int last = p == pieces - 1;
			uint64_t command = TX_DEXT | TX_IFCS | TX_RS | (tso ? TX_IC_TSE : 0) | (last ? TX_EOP | vlan : 0);

			en_descriptor(first + n + p, at[p], at[p] >> 32, size[p] | 1ULL << 20 | command << 24,
				      popts << 8 | special << 16);
		}
		return n + pieces;
	}
}

static void fill_e1000e_net(uint64_t seed, volatile uint32_t *dw)
{
	unsigned lengths[EN_FRAME_COUNT];

	memset(en_memory, 0, sizeof(en_memory));
	for (uint64_t offset = EN_FRAMES; offset < LAYOUT_SIZE; offset += 8)
		put_le(en_memory + offset, random_word(seed, offset / 8), 8);
	for (unsigned f = 0; f < EN_FRAME_COUNT; f++) {
		uint8_t frame[EN_SLOT * 5];
		unsigned first = en_frame_slots[f].first;

		lengths[f] = en_slot_frame(en_frame_slots[f].kind, first, seed, frame);
		memcpy(en_memory + EN_FRAMES + first * EN_SLOT, frame, lengths[f]);
	}
	for (uint64_t d = 0; d < EN_TX_DESCRIPTORS - 2;)
		d += en_tx_packet(seed, d, lengths);
	for (uint64_t e = 0; e < EN_RX_DESCRIPTORS; e++) {
		uint64_t word = random_word(seed, STRUCT_WORDS + 2 * ((EN_RX_RING + 32 * e) / 16));

		for (unsigned j = 0; j < 4; j++) {
			uint64_t buffer = maybe(word, 32 + 4 * j, 4) ? 0 :
				scratch_base + EN_RX_BUFFERS + ((word >> (8 * j)) & 7) * EN_SLOT;

			put_le(en_memory + EN_RX_RING + 32 * e + 8 * j, buffer, 8);
		}
	}
	store_bytes(dw, en_memory, LAYOUT_SIZE);
}

/* ---- virtio_net_modern (recipe-only): keep identical to model/layouts/virtio_net.py ---- */
#define VNM_QUEUE 16ULL
#define VNM_RX 0x000ULL
#define VNM_TX 0x400ULL
#define VNM_CTRL 0x800ULL
#define VNM_AVAIL 0x100ULL
#define VNM_INDIRECT 0xC00ULL
#define VNM_COMMANDS 0x1000ULL
#define VNM_ACKS 0x1800ULL
#define VNM_COMMAND_COUNT 8ULL
#define VNM_FRAMES 0x2000ULL
#define VNM_RX_BUFFERS 0x3000ULL
#define VNM_BUFFER 0x100ULL
#define VNM_NET_HDR 12ULL
#define VNM_W_COMMANDS 0x1000ULL
#define VNM_W_FRAMES 0x1100ULL
#define VNM_W_RX 0x1200ULL
#define VNM_W_AVAIL 0x1300ULL
#define VNM_W_DHCP 0x1310ULL
#define VNM_DHCP_FRAMES 0x1900ULL
#define VNM_DHCP_SLOT 0x300ULL
#define VNM_HASH_IPV4_ALL 7ULL
#define VNM_RSS_KIND 8ULL
#define VNM_RSS_MAX_KEY 40ULL


static void vnm_descriptor(volatile uint8_t *out, uint64_t address, uint64_t length, uint64_t flags, uint64_t next)
{
	put_le(out, address, 8);
	put_le(out + 8, length, 4);
	put_le(out + 12, flags, 2);
	put_le(out + 14, next, 2);
}

/* the first `length` bytes of the words' little-endian bytes */
static void vnm_key(volatile uint8_t *out, const uint64_t *words, uint64_t length)
{
	for (uint64_t i = 0; i < length; i++)
		out[i] = (uint8_t)(words[i / 8] >> (8 * (i % 8)));
}

/* an RSS / hash configuration (valid 7 in 8); returns its length */
static uint64_t vnm_rss_config(volatile uint8_t *out, uint64_t word, const uint64_t *words)
{
	uint64_t entries = 1ULL << ((word >> 8) % 7), hash_types = ((word >> 16) & 0x1FF) | VNM_HASH_IPV4_ALL;
	uint64_t key_length = 1 + (word >> 32) % VNM_RSS_MAX_KEY, unclassified = 0, max_tx_vq = 1, at;

	if (maybe(word, 40, 3)) {
		uint64_t fault = (word >> 44) & 3;

		if (fault == 0)
			entries = 3;
		unclassified = fault == 1;
		max_tx_vq = fault == 2 ? 0 : 1;
		if (fault == 3)
			key_length = VNM_RSS_MAX_KEY + 1;
	}
	put_le(out, hash_types, 4);
	put_le(out + 4, entries - 1, 2);
	put_le(out + 6, unclassified, 2);
	for (at = 8; at < 8 + 2 * entries; at++)
		out[at] = 0;
	put_le(out + at, max_tx_vq, 2);
	out[at + 2] = (uint8_t)key_length;
	key_length = key_length < VNM_RSS_MAX_KEY ? key_length : VNM_RSS_MAX_KEY;
	vnm_key(out + at + 3, words, key_length);
	return at + 3 + key_length;
}

/* a MAC table: its entry count, then the MACs (the last byte of entry i from arg) */
static uint64_t vnm_mac_table(volatile uint8_t *out, uint64_t count, uint64_t first, uint64_t arg)
{
	put_le(out, count, 4);
	for (uint64_t i = 0; i < count; i++) {
		for (unsigned b = 0; b < 5; b++)
			out[4 + 6 * i + b] = frame_guest_mac[b];
		out[4 + 6 * i + 5] = (uint8_t)(arg >> (4 + 3 * (first + i)));
	}
	return 4 + 6 * count;
}

/* one control command (class, command, data) from 8 words; returns its length */
static uint64_t vnm_command(volatile uint8_t *out, const uint64_t *w)
{
	uint64_t word = w[0], kind = word & 15, arg = word >> 16;

	if (kind < 2) {
		out[0] = 0;
		out[1] = (uint8_t)((word >> 8) % 6);
		out[2] = (uint8_t)(arg & 1);
		return 3;
	}
	if (kind == 2) { /* MAC filter table: unicast entries, then multicast ones */
		uint64_t unicast = arg & 3, at = 2;

		out[0] = 1;
		out[1] = 0;
		at += vnm_mac_table(out + at, unicast, 0, arg);
		return at + vnm_mac_table(out + at, (arg >> 2) & 3, unicast, arg);
	}
	if (kind == 3) {
		out[0] = 1;
		out[1] = 1;
		for (unsigned b = 0; b < 3; b++)
			out[2 + b] = frame_guest_mac[b];
		put_le(out + 5, arg & 0xFFFFFF, 3);
		return 8;
	}
	if (kind < 6) {
		out[0] = 2;
		out[1] = (uint8_t)((word >> 8) & 1);
		put_le(out + 2, arg & 0xFFF, 2);
		return 4;
	}
	if (kind < 8) {
		out[0] = 3;
		out[1] = (uint8_t)(maybe(word, 8, 2) ? (word >> 12) & 3 : 0);
		return 2;
	}
	if (kind < 12 || kind == 14) {
		out[0] = 4;
		out[1] = kind == 11 ? 2 : 1;
		return 2 + vnm_rss_config(out + 2, word, w + 2);
	}
	if (kind == 12) {
		out[0] = 4;
		out[1] = 0;
		put_le(out + 2, maybe(word, 8, 2) ? arg & 0xFFFF : 1, 2);
		return 4;
	}
	if (kind == 13) {
		out[0] = 5;
		out[1] = 0;
		put_le(out + 2, arg & 0x1F, 8);
		return 10;
	}
	out[0] = (uint8_t)((word >> 8) & 7);
	out[1] = (uint8_t)((word >> 12) & 7);
	vnm_key(out + 2, w + 1, 2 + (arg & 0x1F));
	return 4 + (arg & 0x1F);
}

/* the header bytes built in a buffer, copied to the (volatile) scratch memory */
static void vnm_copy(volatile uint8_t *out, const uint8_t *bytes, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		out[i] = bytes[i];
}

/* a virtio-net header: NEEDS_CSUM with an offset in the frame one time in 16 */
static void vnm_net_header(volatile uint8_t *out, uint64_t word)
{
	for (unsigned i = 0; i < VNM_NET_HDR; i++)
		out[i] = 0;
	if (maybe(word, 0, 4)) {
		out[0] = 1;
		put_le(out + 6, 14, 2);
		put_le(out + 8, (word >> 8) & 0x3F, 2);
	}
}

static uint64_t vnm_kind(uint64_t word)
{
	return (word >> 16) & 15;
}

/* a virtio-net header and a frame (not DHCP) from 4 words; returns its length */
static uint64_t vnm_transmit(volatile uint8_t *out, const uint64_t *w)
{
	static const uint8_t gateway[4] = { 10, 0, 2, 2 }, dns[4] = { 10, 0, 2, 3 };
	uint64_t word = w[0], kind = vnm_kind(word), length;
	uint8_t outside[4] = { 192, 0, 2, (uint8_t)(word >> 24) }, frame[VNM_BUFFER];

	vnm_net_header(out, word);
	if (kind == 0 || kind == 1 || kind == 15) {
		length = frame_arp(frame, gateway, 1, 6, 4);
	} else if (kind == 2) {
		length = frame_arp(frame, dns, 1, 6, 4);
	} else if (kind == 3) {
		length = frame_arp(frame, outside, 1, 6, 4);
	} else if (kind == 4) {
		length = frame_arp(frame, gateway, (word >> 24) & 3, 6, 4);
	} else if (kind == 5) {
		uint64_t random = 2 + (word >> 24) % 23;

		memcpy(frame, frame_broadcast, 6);
		memcpy(frame + 6, frame_guest_mac, 6);
		for (uint64_t i = 0; i < random; i++)
			frame[12 + i] = (uint8_t)(w[1 + i / 8] >> (8 * (i % 8)));
		length = 12 + random;
	} else if (kind == 6) {
		length = frame_arp(frame, gateway, 1, (word >> 24) & 0xFF, (word >> 32) & 0xFF);
	} else if (kind < 10) {
		length = frame_icmp_echo(frame, w[1]);
	} else {
		uint64_t flags = kind == 13 ? (w[2] >> 8) & 0x3F : FRAME_TCP_SYN;

		length = frame_tcp_segment(frame, w[1], flags, (unsigned)((w[2] >> 16) & 0x3F), kind != 14);
	}
	vnm_copy(out + VNM_NET_HDR, frame, length);
	return VNM_NET_HDR + length;
}

/* the header and DHCP frame of region `parity` */
static void vnm_dhcp(volatile uint8_t *out, uint64_t seed, uint64_t parity)
{
	uint64_t word = random_word(seed, VNM_W_DHCP + parity);
	uint8_t frame[FRAME_DHCP_LENGTH];

	vnm_net_header(out, word);
	vnm_copy(out + VNM_NET_HDR, frame, frame_dhcp_discover(frame, word));
}

static void vnm_avail(volatile uint8_t *m, uint64_t queue, uint64_t count, uint64_t step)
{
	put_le(m + queue + VNM_AVAIL, 0, 2);
	put_le(m + queue + VNM_AVAIL + 2, count, 2);
	for (uint64_t i = 0; i < (step == 1 ? VNM_QUEUE : VNM_COMMAND_COUNT); i++)
		put_le(m + queue + VNM_AVAIL + 4 + 2 * i, step * i, 2);
}

static void fill_virtio_net_modern(uint64_t seed, volatile uint32_t *dw)
{
	volatile uint8_t *m = (volatile uint8_t *)dw;

	for (uint64_t c = 0; c < LAYOUT_DWORDS; c++)
		dw[c] = 0;
	for (uint64_t i = 0; i < VNM_QUEUE; i++) {
		uint64_t word = random_word(seed, VNM_W_RX + i);

		vnm_descriptor(m + VNM_RX + 16 * i, scratch_base + VNM_RX_BUFFERS + VNM_BUFFER * i,
			       maybe(word, 0, 4) ? (word >> 8) & 0xFF : VNM_BUFFER, maybe(word, 16, 5) ? 0 : 2, 0);
	}
	vnm_avail(m, VNM_RX, VNM_QUEUE, 1);
	for (uint64_t parity = 0; parity < 2; parity++)
		vnm_dhcp(m + VNM_DHCP_FRAMES + VNM_DHCP_SLOT * parity, seed, parity);
	for (uint64_t i = 0; i < VNM_QUEUE; i++) {
		uint64_t w[4], length, at, buffer;

		for (unsigned j = 0; j < 4; j++)
			w[j] = random_word(seed, VNM_W_FRAMES + 4 * i + j);
		if (vnm_kind(w[0]) == 10 || vnm_kind(w[0]) == 11) {
			at = VNM_DHCP_FRAMES + VNM_DHCP_SLOT * (i & 1);
			length = VNM_NET_HDR + FRAME_DHCP_LENGTH;
		} else {
			at = VNM_FRAMES + VNM_BUFFER * i;
			length = vnm_transmit(m + at, w);
		}
		buffer = scratch_base + at;
		if (maybe(w[0], 40, 2)) {
			uint64_t table = VNM_INDIRECT + 32 * i;

			vnm_descriptor(m + table, buffer, VNM_NET_HDR, 1, 1);
			vnm_descriptor(m + table + 16, buffer + VNM_NET_HDR, length - VNM_NET_HDR, 0, 0);
			vnm_descriptor(m + VNM_TX + 16 * i, scratch_base + table, 32, 4, 0);
		} else {
			vnm_descriptor(m + VNM_TX + 16 * i, buffer, length, maybe(w[0], 42, 5) ? 2 : 0, 0);
		}
	}
	vnm_avail(m, VNM_TX, 1 + random_word(seed, VNM_W_AVAIL) % VNM_QUEUE, 1);
	for (uint64_t k = 0; k < VNM_COMMAND_COUNT; k++) {
		uint64_t w[8], length, slot = VNM_COMMANDS + VNM_BUFFER * k;

		for (unsigned j = 0; j < 8; j++)
			w[j] = random_word(seed, VNM_W_COMMANDS + 8 * k + j);
		if (k == VNM_COMMAND_COUNT - 1) /* every MQ command resets RSS: the last one configures it, validly */
			w[0] = (w[0] & ~15ULL) | VNM_RSS_KIND | 1ULL << 40;
		length = vnm_command(m + slot, w);
		vnm_descriptor(m + VNM_CTRL + 32 * k, scratch_base + slot, length, 1, 2 * k + 1);
		vnm_descriptor(m + VNM_CTRL + 32 * k + 16, scratch_base + VNM_ACKS + k, 1, maybe(w[1], 0, 8) ? 0 : 2, 0);
	}
	vnm_avail(m, VNM_CTRL, VNM_COMMAND_COUNT, 2);
}

/* ---- lsi_scripts: SCRIPTS programs doing SCSI I/O; keep identical to model/layouts/lsi_scripts.py ---- */

#define LSI_PROGRAMS 16
#define LSI_PROGRAM_BYTES 0x200ULL
#define LSI_TABLES 0x2000ULL
#define LSI_TABLE_BYTES 0x100ULL
#define LSI_BUFFER 0x3000ULL
#define LSI_BUFFER_BYTES 0x1000ULL
#define LSI_DISK_BLOCKS (64ULL * 1024 * 1024 / 512)
#define LSI_DISPATCH 23
#define LSI_DISC 33
#define LSI_DOUT 47
#define LSI_DIN 65
#define LSI_STATUS 83
#define LSI_END 93
#define LSI_ABORT 95
#define LSI_PROGRAM_DWORDS 103
enum lsi_form { F_NONE, F_RW6, F_LBA10, F_LBA12, F_LBA16, F_LEN_B4, F_LEN_B34, F_LEN_B78, F_LEN_B69, F_LEN_B1013 };
enum lsi_page { PG_NONE, PG_VPD, PG_MODE, PG_REPORT };
static const uint8_t lsi_commands[32][6] = {
	{ 0x00, 6, F_NONE, 0, 0, PG_NONE },	   { 0x12, 6, F_LEN_B34, 0, 0x01, PG_VPD },
	{ 0x12, 6, F_LEN_B34, 0x01, 0, PG_VPD },   { 0x25, 10, F_NONE, 0, 0, PG_NONE },
	{ 0x9E, 16, F_LEN_B1013, 0x10, 0, PG_NONE }, { 0x08, 6, F_RW6, 0, 0, PG_NONE },
	{ 0x28, 10, F_LBA10, 0, 0x08, PG_NONE },   { 0x28, 10, F_LBA10, 0, 0x08, PG_NONE },
	{ 0xA8, 12, F_LBA12, 0, 0x08, PG_NONE },   { 0x88, 16, F_LBA16, 0, 0x08, PG_NONE },
	{ 0x0A, 6, F_RW6, 0, 0, PG_NONE },	   { 0x2A, 10, F_LBA10, 0, 0x08, PG_NONE },
	{ 0x2A, 10, F_LBA10, 0, 0x08, PG_NONE },   { 0xAA, 12, F_LBA12, 0, 0x08, PG_NONE },
	{ 0x8A, 16, F_LBA16, 0, 0x08, PG_NONE },   { 0x2F, 10, F_LBA10, 0, 0x02, PG_NONE },
	{ 0x8F, 16, F_LBA16, 0, 0x02, PG_NONE },   { 0x35, 10, F_LBA10, 0, 0x02, PG_NONE },
	{ 0x91, 16, F_LBA16, 0, 0x02, PG_NONE },   { 0x1A, 6, F_LEN_B4, 0, 0x08, PG_MODE },
	{ 0x5A, 10, F_LEN_B78, 0, 0x08, PG_MODE }, { 0x15, 6, F_LEN_B4, 0x10, 0x01, PG_NONE },
	{ 0x55, 10, F_LEN_B78, 0x10, 0x01, PG_NONE }, { 0x03, 6, F_LEN_B4, 0, 0, PG_NONE },
	{ 0x1B, 6, F_LEN_B4, 0, 0x01, PG_NONE },   { 0x42, 10, F_LEN_B78, 0, 0x01, PG_NONE },
	{ 0x41, 10, F_LBA10, 0, 0x08, PG_NONE },   { 0x93, 16, F_LBA16, 0, 0x08, PG_NONE },
	{ 0xA0, 12, F_LEN_B69, 0, 0, PG_REPORT },  { 0x2B, 10, F_LBA10, 0, 0, PG_NONE },
	{ 0x1E, 6, F_LEN_B4, 0, 0, PG_NONE },	   { 0x04, 6, F_NONE, 0, 0, PG_NONE },
};
static const uint8_t lsi_vpd_pages[8] = { 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2, 0x89, 0xC0 };
static const uint8_t lsi_mode_pages[8] = { 0x3F, 0x08, 0x01, 0x04, 0x05, 0x0A, 0x1C, 0x00 };
static const uint8_t lsi_prefixes[9][9] = {
	/* length, then the message bytes */
	{ 0 }, { 5, 0x01, 0x03, 0x01, 0x0C, 0x08 }, { 4, 0x01, 0x02, 0x03, 0x01 },
	{ 8, 0x01, 0x06, 0x04, 0x09, 0, 0x3E, 0x01, 0x02 }, { 1, 0x08 }, { 1, 0x06 }, { 1, 0x0C }, { 1, 0x0D }, { 1, 0x07 },
};

static uint64_t lsi_blocks(uint64_t word)
{
	uint64_t pick = (word >> 40) & 15;

	if (pick == 0)
		return 0;
	if (pick <= 12)
		return 1 + ((word >> 44) & 7);
	if (pick <= 14)
		return 9 + ((word >> 48) & 15) % 23;
	return 0x100 + ((word >> 48) & 0xFFFF);
}

static uint64_t lsi_lba(uint64_t word)
{
	if (maybe(word, 0, 3)) {
		const uint64_t edges[4] = { LSI_DISK_BLOCKS - 1, LSI_DISK_BLOCKS, 0xFFFFFFFFULL,
					    LSI_DISK_BLOCKS + ((word >> 8) & 0xFFFF) };

		return edges[(word >> 3) & 3];
	}
	return ((word >> 8) & 0xFFFFFFFFULL) % (LSI_DISK_BLOCKS - 32);
}

/* a command descriptor block (16 bytes) from the command table; returns its length */
static unsigned lsi_cdb(uint64_t w1, uint64_t w2, uint8_t *out)
{
	static const uint8_t read_write[8] = { 5, 6, 8, 9, 10, 11, 13, 14 }; /* one command in two */
	const uint8_t *c = lsi_commands[maybe(w1, 5, 1) ? read_write[(w1 >> 6) & 7] : w1 & 31];
	uint64_t count = lsi_blocks(w2), address = lsi_lba(w2), amount = 4 + ((w1 >> 24) & 0xFF);

	memset(out, 0, 16);
	out[0] = c[0];
	out[1] = (uint8_t)(c[3] | ((w1 >> 8) & 0xFF & c[4]));
	if (c[5] == PG_VPD)
		out[2] = lsi_vpd_pages[(w1 >> 16) & 7];
	else if (c[5] == PG_MODE)
		out[2] = (uint8_t)(((w1 >> 19) & 3) << 6 | lsi_mode_pages[(w1 >> 16) & 7]);
	else if (c[5] == PG_REPORT)
		out[2] = (uint8_t)((w1 >> 16) & 3);
	switch (c[2]) {
	case F_RW6:
		out[1] = (uint8_t)((address >> 16) & 0x1F);
		out[2] = (uint8_t)(address >> 8);
		out[3] = (uint8_t)address;
		out[4] = (uint8_t)count;
		break;
	case F_LBA10:
		put_be(out + 2, address & 0xFFFFFFFFULL, 4);
		put_be(out + 7, count & 0xFFFF, 2);
		break;
	case F_LBA12:
		put_be(out + 2, address & 0xFFFFFFFFULL, 4);
		put_be(out + 6, count, 4);
		break;
	case F_LBA16:
		put_be(out + 2, address, 8);
		put_be(out + 10, count, 4);
		break;
	case F_LEN_B4:
		out[4] = (uint8_t)amount;
		break;
	case F_LEN_B34:
		put_be(out + 3, amount, 2);
		break;
	case F_LEN_B78:
		put_be(out + 7, amount, 2);
		break;
	case F_LEN_B69:
		put_be(out + 6, amount, 4);
		break;
	case F_LEN_B1013:
		put_be(out + 10, amount, 4);
		break;
	}
	return c[1];
}

static void fill_lsi_program(uint64_t p, const uint64_t *w, volatile uint32_t *dw)
{
	uint64_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
	uint64_t prog = scratch_base + LSI_PROGRAM_BYTES * p, table = scratch_base + LSI_TABLES + LSI_TABLE_BYTES * p;
	int start = p % 8 == 0; /* where the recipes start SCRIPTS: never malformed, never the last */
	int malformed = !start && maybe(w0, 20, 3), kind = malformed ? (int)((w0 >> 23) & 3) : -1;
	uint64_t pmj = !maybe(w0, 0, 4), target = kind == 3 ? (w0 >> 10) & 7 : 0;
	uint64_t lun = maybe(w0, 28, 3) ? (w0 >> 31) & 7 : 0;
	int tagged = maybe(w0, 26, 2), last = p == LSI_PROGRAMS - 1 || (!start && maybe(w0, 13, 4));
	uint64_t data_count = !maybe(w0, 14, 2) ? LSI_BUFFER_BYTES : 512 * (1 + ((w0 >> 16) & 7));
	uint64_t msg_phase = kind == 0 ? 2 : 6, cmd_phase = kind == 0 ? 6 : 2, in_phase = kind == 2 ? 0 : 1;
	uint64_t code[LSI_PROGRAM_DWORDS], n = 0;
	uint64_t rows[LSI_TABLE_BYTES / 4] = { 0 };
	uint8_t message[16], command[16];
	unsigned message_len = 0, cdb_len;

#define AT(label) (prog + 4 * (label))
#define EMIT(a, b) (code[n++] = (a), code[n++] = (b))
	EMIT(0x72420000ULL, 0); /* read SIST0, SIST1: clears an earlier program's select timeout */
	EMIT(0x72430000ULL, 0);
	EMIT(0xE1100004ULL, table + 0x98);
	EMIT(0xF1C00004ULL, 0x90);
	EMIT(0x78560000ULL | (pmj ? 0x80 : 0) << 8, 0);
	if (maybe(w0, 3, 2)) {
		EMIT(0xC0000000ULL | (1 + ((w0 >> 44) & 15)), table + 0x50);
		code[n++] = table + 0xA0;
	} else {
		EMIT(0x80000000ULL, 0);
		code[n++] = 0;
	}
	if ((w0 >> 5) & 1)
		EMIT(0x43000000ULL | 0x38, AT(LSI_DISPATCH));
	else
		EMIT(0x41000008ULL | target << 16, AT(LSI_DISPATCH));
	EMIT(0x72430000ULL, 0); /* clear a select timeout; not selected: the next program */
	EMIT(0x86020000ULL, AT(LSI_END));
	EMIT(0x18000000ULL | msg_phase << 24, 0x00);
	EMIT(0x18000000ULL | cmd_phase << 24, 0x08);
	EMIT(0x800A0000ULL | 3ULL << 24, AT(LSI_STATUS));
	EMIT(0x800A0000ULL | 7ULL << 24, AT(LSI_DISC));
	EMIT(0x880A0000ULL, AT(LSI_DOUT));
	EMIT(0x880A0000ULL | 1ULL << 24, AT(LSI_DIN));
	EMIT(0x80080000ULL, AT(LSI_STATUS));
	EMIT(0x1F000000ULL, 0x28);
	EMIT(0x48000000ULL, 0);
	EMIT(0x50000000ULL, AT(LSI_ABORT));
	EMIT(0x1F000000ULL, 0x30);
	EMIT(0x880A0000ULL, AT(LSI_DOUT));
	EMIT(0x880A0000ULL | 1ULL << 24, AT(LSI_DIN));
	EMIT(0x80080000ULL, AT(LSI_STATUS));
	for (int dir = 0; dir < 2; dir++) {
		uint64_t phase = dir == 0 ? 0 : in_phase;

		for (int m = 0; m < 4; m++) {
			EMIT(0x18000000ULL | phase << 24, 0x10);
			EMIT(0x90020000ULL | phase << 24, 0);
		}
		EMIT(0x90080000ULL, 0);
	}
	EMIT(0x83020000ULL, AT(LSI_ABORT));
	EMIT(0x1B000000ULL, 0x18);
	EMIT(0x1F000000ULL, 0x20);
	EMIT(0x48000000ULL, 0);
	EMIT(0xF0340004ULL, 0x80);
	if (last)
		EMIT(0x98080000ULL, 0x1000 | p);
	else
		EMIT(0x80080000ULL, prog + LSI_PROGRAM_BYTES);
	EMIT(0x58000008ULL, 0); /* abort: SET ATN, MOVE ABORT WHEN MSG_OUT, CLEAR ATN, JUMP end */
	EMIT(0x1E000000ULL, 0xB0);
	EMIT(0x60000008ULL, 0);
	EMIT(0x80080000ULL, AT(LSI_END));
#undef EMIT
	for (unsigned i = 0; i < LSI_PROGRAM_DWORDS; i++)
		dw[LSI_PROGRAM_BYTES * p / 4 + i] = (uint32_t)code[i];

	if (maybe(w3, 4, 2) || kind == 1) {
		const uint8_t *prefix = lsi_prefixes[(w3 & 15) % 9];

		for (unsigned i = 0; i < prefix[0]; i++)
			message[message_len++] = prefix[1 + i];
	}
	message[message_len++] = (uint8_t)((((w0 >> 34) & 1) ? 0xC0 : 0x80) | lun);
	if (tagged) {
		message[message_len++] = 0x20;
		message[message_len++] = (uint8_t)(w0 >> 40);
	}
	cdb_len = lsi_cdb(w1, w2, command);
	if (kind == 2)
		cdb_len = (unsigned)(1 + ((w3 >> 8) & 15));
	{
		const uint64_t entries[16] = { message_len, table + 0x40, cdb_len, table + 0x50, data_count,
					       scratch_base + LSI_BUFFER, 1, table + 0x60, 1, table + 0x68, 2, table + 0x70,
					       3, table + 0x78, target << 16, 0 };
		volatile uint32_t *t = dw + (LSI_TABLES + LSI_TABLE_BYTES * p) / 4;

		for (unsigned i = 0; i < 16; i++)
			rows[i] = entries[i];
		rows[0x90 / 4] = AT(LSI_STATUS);
		rows[0x98 / 4] = table;
		rows[0xB0 / 4] = 1;
		rows[0xB4 / 4] = table + 0xB8;
		rows[0xB8 / 4] = 0x06; /* ABORT */
		for (unsigned i = 0; i < LSI_TABLE_BYTES / 4; i++)
			t[i] = (uint32_t)rows[i];
		store_bytes(t + 0x40 / 4, message, message_len);
		store_bytes(t + 0x50 / 4, command, 16);
		for (unsigned i = 0; i < LSI_TABLE_BYTES / 4; i++) /* tame(): no memory move in a table */
			if (t[i] >> 29 == 6)
				t[i] &= ~0x80000000U;
	}
#undef AT
}

static void fill_lsi_scripts(uint64_t seed, volatile uint32_t *dw)
{
	for (uint64_t p = 0; p < LSI_PROGRAMS; p++) {
		uint64_t w[4];

		for (unsigned j = 0; j < 4; j++)
			w[j] = random_word(seed, STRUCT_WORDS + 16 * p + j);
		for (unsigned i = LSI_PROGRAM_DWORDS; i < LSI_PROGRAM_BYTES / 4; i++)
			dw[LSI_PROGRAM_BYTES * p / 4 + i] = 0;
		fill_lsi_program(p, w, dw);
	}
	for (uint64_t d = LSI_BUFFER / 4; d < LAYOUT_DWORDS; d++) /* the data buffer: zero */
		dw[d] = 0;
}

/* The scratch memory (16 KiB) laid out like one device family's structures, for the fill seed. */
static void fill_layout(int layout, uint64_t seed, volatile uint32_t *dwords)
{
	if (layout == LAYOUT_UHCI)
		fill_uhci(seed, dwords);
	else if (layout == LAYOUT_EHCI)
		fill_ehci(seed, dwords);
	else if (layout == LAYOUT_VIRTIO)
		fill_virtio(seed, dwords);
	else if (layout == LAYOUT_NVME)
		fill_nvme(seed, dwords);
	else if (layout == LAYOUT_MEGASAS)
		fill_megasas(seed, dwords);
	else if (layout == LAYOUT_AHCI)
		fill_ahci(seed, dwords);
	else if (layout == LAYOUT_EHCI_MSD)
		fill_ehci_msd(seed, dwords);
	else if (layout == LAYOUT_VIRTIO_BLK_REQ)
		fill_virtio_blk_req(seed, dwords);
	else if (layout == LAYOUT_MEGASAS_IO)
		fill_megasas_io(seed, dwords);
	else if (layout == LAYOUT_E1000E_NET)
		fill_e1000e_net(seed, dwords);
	else if (layout == LAYOUT_VIRTIO_NET_MODERN)
		fill_virtio_net_modern(seed, dwords);
	else if (layout == LAYOUT_LSI_SCRIPTS)
		fill_lsi_scripts(seed, dwords);
	else
		fill_e1000(seed, dwords);
}

/* Where a range's write values come from; a constant in every hot loop, so each loop carries no branch for it. */
enum value_mode { VALUES_UNIFORM, VALUES_DMA, VALUES_FIXED };

static inline enum value_mode value_mode(const struct range *r)
{
	return r->has_fixed ? VALUES_FIXED : r->dma ? VALUES_DMA : VALUES_UNIFORM;
}

static inline __attribute__((always_inline)) struct op gen_op_values(const struct range *r, uint64_t i,
								   enum value_mode mode)
{
	uint64_t n = r->slots;
	struct op op = { 'r', 0, r->width, 0 };

	if (i < n && r->lead) {
		op.port = r->start + i * r->width;
	} else if (i < r->lead) {
		op.kind = 'w';
		op.port = r->start + (i - n) * r->width;
	} else {
		uint64_t k = i - r->lead;
		uint64_t slot = (uint64_t)(((unsigned __int128)random_word(r->rseed, 2 * k) * n) >> 64);
		uint64_t value;

		if (mode == VALUES_FIXED) { /* checked against the width when parsed */
			value = r->fixed;
		} else {
			value = random_word(r->rseed, 2 * k + 1);
			if (mode == VALUES_DMA)
				value = dictionary_value(value, r->width);
			if (r->width < 8)
				value &= (1ULL << (8 * r->width)) - 1;
		}
		op.kind = 'w';
		op.port = r->start + slot * r->width;
		op.value = value;
	}
	return op;
}

static inline __attribute__((always_inline)) struct op gen_op(const struct range *r, uint64_t i)
{
	return gen_op_values(r, i, VALUES_UNIFORM);
}

/* ---- port access ----------------------------------------------------- */

static inline void port_read(uint16_t port, uint64_t width)
{
	/* volatile asm: the read happens although its value is unused */
	if (width == 1) {
		uint8_t v;
		__asm__ __volatile__("inb %w1, %b0" : "=a"(v) : "Nd"(port));
	} else if (width == 2) {
		uint16_t v;
		__asm__ __volatile__("inw %w1, %w0" : "=a"(v) : "Nd"(port));
	} else {
		uint32_t v;
		__asm__ __volatile__("inl %w1, %0" : "=a"(v) : "Nd"(port));
	}
}

static inline void port_write(uint16_t port, uint64_t width, uint64_t value)
{
	if (width == 1)
		__asm__ __volatile__("outb %b0, %w1" : : "a"((uint8_t)value), "Nd"(port));
	else if (width == 2)
		__asm__ __volatile__("outw %w0, %w1" : : "a"((uint16_t)value), "Nd"(port));
	else
		__asm__ __volatile__("outl %0, %w1" : : "a"((uint32_t)value), "Nd"(port));
}

/* Single loads and stores of exactly `width` bytes: volatile keeps each one. */
static inline void mmio_read(volatile uint8_t *p, uint64_t width)
{
	if (width == 1)
		(void)*p;
	else if (width == 2)
		(void)*(volatile uint16_t *)p;
	else if (width == 4)
		(void)*(volatile uint32_t *)p;
	else
		(void)*(volatile uint64_t *)p;
}

static inline void mmio_write(volatile uint8_t *p, uint64_t width, uint64_t value)
{
	if (width == 1)
		*p = (uint8_t)value;
	else if (width == 2)
		*(volatile uint16_t *)p = (uint16_t)value;
	else if (width == 4)
		*(volatile uint32_t *)p = (uint32_t)value;
	else
		*(volatile uint64_t *)p = value;
}

static void __attribute__((noreturn, format(printf, 2, 3))) fail(int status, const char *fmt, ...);
static void emit(const char *fmt, ...);
static uint64_t parse_number(const char *what, const char *text, uint64_t max);

/* ---- putting a pci range's header back (see "Header restore" above) ------- */

struct header_register {
	uint16_t offset;
	uint8_t width;
};

/* Where a type-0 function decodes: its six BARs (both halves of a 64-bit one) and its ROM BAR. */
static const struct header_register type0_registers[] = {
	{ 0x10, 4 }, { 0x14, 4 }, { 0x18, 4 }, { 0x1c, 4 }, { 0x20, 4 }, { 0x24, 4 }, { 0x30, 4 },
};
/* A bridge's: its BARs, bus numbers, windows, ROM and bridge control (secondary bus reset, VGA/ISA
 * forwarding). 0x1c and 0x3e take 2 bytes: the other halves of their dwords are the secondary
 * status (write 1 to clear: writing it back would clear it) and the interrupt line and pin. */
static const struct header_register type1_registers[] = {
	{ 0x10, 4 }, { 0x14, 4 }, { 0x18, 4 }, { 0x1c, 2 }, { 0x20, 4 }, { 0x24, 4 },
	{ 0x28, 4 }, { 0x2c, 4 }, { 0x30, 4 }, { 0x38, 4 }, { 0x3e, 2 },
};

struct pci_header {
	uint32_t command;
	uint32_t values[MAX_HEADER_REGISTERS];
	const struct header_register *registers; /* by header type; NULL (none but the command) for others */
	int n_registers;
};

struct config_write {
	uint32_t offset;
	uint32_t width;
	uint32_t value;
};

static int pci_restore = 1;		     /* --no-pci-restore clears it */
static const struct range *pci_entered;	     /* the pci range whose header is saved; NULL outside one */
static struct pci_header pci_saved;	     /* its header as the range found it */
static uint64_t pci_position;		     /* the op it is left at */
static volatile sig_atomic_t stop_signal;    /* a stop signal that came while in a pci range */
static const int stop_signals[] = { SIGINT, SIGTERM, SIGHUP };

static void note_stop_signal(int sig)
{
	stop_signal = sig;
}

static void catch_stop_signals(int on)
{
	struct sigaction action;

	memset(&action, 0, sizeof(action));
	action.sa_handler = on ? note_stop_signal : SIG_DFL;
	sigemptyset(&action.sa_mask);
	for (size_t k = 0; k < sizeof(stop_signals) / sizeof(stop_signals[0]); k++)
		sigaction(stop_signals[k], &action, NULL);
}

static int config_read(int fd, uint32_t offset, uint32_t width, uint32_t *value)
{
	*value = 0; /* little endian: a narrower read fills the low bytes */
	return pread(fd, value, width, offset) == (ssize_t)width ? 0 : -1;
}

static int read_header(int fd, struct pci_header *h)
{
	uint32_t type;

	if (config_read(fd, PCI_HEADER_TYPE_REGISTER, 1, &type) < 0 ||
	    config_read(fd, PCI_COMMAND_REGISTER, 2, &h->command) < 0)
		return -1;
	type &= 0x7f; /* bit 7: multi-function */
	h->registers = type == 0 ? type0_registers : type == 1 ? type1_registers : NULL;
	h->n_registers = type == 0   ? (int)(sizeof(type0_registers) / sizeof(type0_registers[0]))
			 : type == 1 ? (int)(sizeof(type1_registers) / sizeof(type1_registers[0]))
				     : 0;
	for (int k = 0; k < h->n_registers; k++)
		if (config_read(fd, h->registers[k].offset, h->registers[k].width, &h->values[k]) < 0)
			return -1;
	return 0;
}

/* The writes that take header `now` back to `saved`: decoding off (if an address register changed and
 * decoding is on), each changed register, then the command register (if it is not as saved). Keep in
 * step with avocado_iofuzz/model/pci_restore.py. */
static int plan_restore(const struct pci_header *saved, const struct pci_header *now, struct config_write *out)
{
	uint32_t command = now->command;
	int n = 0, moved = 0;

	for (int k = 0; k < saved->n_registers; k++)
		moved |= now->values[k] != saved->values[k];
	if (moved && (command & PCI_COMMAND_DECODE)) {
		command &= ~(uint32_t)PCI_COMMAND_DECODE;
		out[n++] = (struct config_write){ PCI_COMMAND_REGISTER, 2, command };
	}
	for (int k = 0; k < saved->n_registers; k++)
		if (now->values[k] != saved->values[k])
			out[n++] = (struct config_write){ saved->registers[k].offset, saved->registers[k].width,
							  saved->values[k] };
	if (command != saved->command)
		out[n++] = (struct config_write){ PCI_COMMAND_REGISTER, 2, saved->command };
	return n;
}

/* --pci-saved I:TYPE:0xCMD[:0xV...]: the header range I had when an earlier invocation entered it */
static struct pci_header pci_given;
static uint64_t pci_given_index;
static int pci_given_set;

static void parse_pci_saved(const char *text)
{
	char buf[256], *save, *word;
	uint64_t type = 0, value;
	int k = -3;

	pci_given = (struct pci_header){ 0 };

	if (strlen(text) >= sizeof(buf))
		fail(EXIT_USAGE, "--pci-saved: '%.40s...' is too long", text);
	strcpy(buf, text);
	for (word = strtok_r(buf, ":", &save); word; word = strtok_r(NULL, ":", &save), k++) {
		if (k == -3) {
			pci_given_index = parse_number("--pci-saved range index", word, 0xffffffffULL);
		} else if (k == -2) {
			type = parse_number("--pci-saved header type", word, 0x7f);
			pci_given.registers = type == 0 ? type0_registers : type == 1 ? type1_registers : NULL;
			pci_given.n_registers = type == 0   ? (int)(sizeof(type0_registers) / sizeof(type0_registers[0]))
						: type == 1 ? (int)(sizeof(type1_registers) / sizeof(type1_registers[0]))
							    : 0;
		} else if (k >= MAX_HEADER_REGISTERS) {
			break;
		} else {
			value = parse_number("--pci-saved register value", word, 0xffffffffULL);
			if (k == -1)
				pci_given.command = (uint32_t)value;
			else
				pci_given.values[k] = (uint32_t)value;
		}
	}
	if (k < -1 || k != pci_given.n_registers)
		fail(EXIT_USAGE, "--pci-saved %s: expected I:TYPE:0xCOMMAND and %d register value(s) for header type %" PRIu64,
		     text, pci_given.n_registers, type);
	pci_given_set = 1;
}

/*
 * Entering pci range r at op `op_index`: save its function's header (as --pci-saved gives it, when an
 * earlier invocation entered the range and did not leave it: the header may be half fuzzed now), say
 * what was saved (@SAVED), catch stop signals.
 */
static void enter_pci_range(const struct range *r, uint64_t op_index)
{
	char line[480];
	int len;

	if (!pci_restore || r->space != SPACE_PCI)
		return;
	if (pci_given_set && pci_given_index == r->index)
		pci_saved = pci_given;
	else if (read_header(r->config_fd, &pci_saved) < 0)
		fail(EXIT_RUNTIME, "range %" PRIu64 ": cannot read the config header (to put it back later): %s", r->index,
		     strerror(errno));
	len = snprintf(line, sizeof(line), "@SAVED %" PRIu64 " %d 0x%x", r->index,
		       pci_saved.registers == type0_registers ? 0 : pci_saved.registers == type1_registers ? 1 : 127,
		       pci_saved.command);
	for (int k = 0; k < pci_saved.n_registers && len < (int)sizeof(line); k++)
		len += snprintf(line + len, sizeof(line) - len, " 0x%x", pci_saved.values[k]);
	emit("%s", line);
	pci_position = op_index;
	stop_signal = 0;
	catch_stop_signals(1);
	pci_entered = r;
}

/*
 * Leaving the pci range entered last, at op pci_position: announce the writes that put its header
 * back (@RESTORE), make them, let stop signals through again and act on one that came meanwhile.
 * `fatal`: a failed write ends the executor (0 when called by fail() itself).
 */
static void leave_pci_range(int fatal)
{
	const struct range *r = pci_entered;
	struct config_write writes[MAX_RESTORE_WRITES];
	struct pci_header now = pci_saved;
	char line[480];
	int n, len;

	if (!r)
		return;
	pci_entered = NULL; /* first: fail() must not come back here */
	if (read_header(r->config_fd, &now) < 0) {
		if (fatal)
			fail(EXIT_RUNTIME, "range %" PRIu64 ": cannot read the config header back: %s", r->index,
			     strerror(errno));
		return;
	}
	n = plan_restore(&pci_saved, &now, writes);
	if (n) {
		len = snprintf(line, sizeof(line), "@RESTORE %" PRIu64 " %" PRIu64, r->index, pci_position);
		for (int k = 0; k < n && len < (int)sizeof(line); k++)
			len += snprintf(line + len, sizeof(line) - len, " 0x%x:%u:0x%x", writes[k].offset, writes[k].width,
					writes[k].value);
		emit("%s", line);
	}
	for (int k = 0; k < n; k++) {
		if (pwrite(r->config_fd, &writes[k].value, writes[k].width, writes[k].offset) != (ssize_t)writes[k].width &&
		    fatal)
			fail(EXIT_RUNTIME, "range %" PRIu64 ": putting config register 0x%x back failed: %s", r->index,
			     writes[k].offset, strerror(errno));
	}
	catch_stop_signals(0);
	if (stop_signal)
		raise(stop_signal); /* the default action now: the executor ends as the signal asked */
}

static inline __attribute__((always_inline)) void mmio_loop(const struct range *r, uint64_t first, uint64_t stop,
							      enum value_mode mode)
{
	for (uint64_t i = first; i < stop; i++) {
		struct op op = gen_op_values(r, i, mode);
		volatile uint8_t *p = r->mmio + (op.port - r->start);

		if (op.kind == 'r')
			mmio_read(p, op.width);
		else
			mmio_write(p, op.width, op.value);
	}
}

/* Config space through sysfs: the kernel turns each pread/pwrite of 1, 2 or 4
 * aligned bytes into one config cycle of that size. */
static inline __attribute__((always_inline)) void pci_loop(const struct range *r, uint64_t first, uint64_t stop,
							     enum value_mode mode)
{
	for (uint64_t i = first; i < stop; i++) {
		struct op op = gen_op_values(r, i, mode);
		uint32_t value = (uint32_t)op.value; /* little endian: the low bytes go first */
		off_t reg = (off_t)(op.port & 0xfff);
		ssize_t n;

		if (stop_signal) { /* only ever set in a pci range with its header saved */
			pci_position = i;
			leave_pci_range(1);
		}
		n = op.kind == 'r' ? pread(r->config_fd, &value, op.width, reg) : pwrite(r->config_fd, &value, op.width, reg);
		if (n != (ssize_t)op.width) {
			pci_position = i;
			if (n < 0 && (errno == EPERM || errno == EACCES)) {
				emit("@DENIED %" PRIu64 " config %s refused: %s", r->index, op.kind == 'r' ? "read" : "write",
				     strerror(errno));
				fail(EXIT_DENIED, "raw access denied by the guest kernel");
			}
			fail(EXIT_RUNTIME, "range %" PRIu64 ": config %s of %" PRIu64 " bytes at 0x%llx: %s", r->index,
			     op.kind == 'r' ? "read" : "write", op.width, (unsigned long long)reg,
			     n < 0 ? strerror(errno) : "short transfer");
		}
	}
}

/* The hot loop: no output, no syscall, one generated op per access. */
static inline __attribute__((always_inline)) void io_loop(const struct range *r, uint64_t first, uint64_t stop,
							    enum value_mode mode)
{
	for (uint64_t i = first; i < stop; i++) {
		struct op op = gen_op_values(r, i, mode);

		if (op.kind == 'r')
			port_read((uint16_t)op.port, op.width);
		else
			port_write((uint16_t)op.port, op.width, op.value);
	}
}

/* One specialised loop per space and value mode: the value mode is chosen per range, not per op. */
static void run_io(const struct range *r, uint64_t first, uint64_t stop) { io_loop(r, first, stop, VALUES_UNIFORM); }
static void run_io_dma(const struct range *r, uint64_t first, uint64_t stop) { io_loop(r, first, stop, VALUES_DMA); }
static void run_io_fixed(const struct range *r, uint64_t first, uint64_t stop) { io_loop(r, first, stop, VALUES_FIXED); }
static void run_mmio(const struct range *r, uint64_t first, uint64_t stop) { mmio_loop(r, first, stop, VALUES_UNIFORM); }
static void run_mmio_dma(const struct range *r, uint64_t first, uint64_t stop) { mmio_loop(r, first, stop, VALUES_DMA); }
static void run_mmio_fixed(const struct range *r, uint64_t first, uint64_t stop) { mmio_loop(r, first, stop, VALUES_FIXED); }
static void run_pci(const struct range *r, uint64_t first, uint64_t stop) { pci_loop(r, first, stop, VALUES_UNIFORM); }
static void run_pci_dma(const struct range *r, uint64_t first, uint64_t stop) { pci_loop(r, first, stop, VALUES_DMA); }
static void run_pci_fixed(const struct range *r, uint64_t first, uint64_t stop) { pci_loop(r, first, stop, VALUES_FIXED); }

typedef void (*range_loop)(const struct range *, uint64_t, uint64_t);

static void run_range(const struct range *r, uint64_t first, uint64_t stop)
{
	/* [space][value mode] */
	static const range_loop loops[][3] = {
		[SPACE_PIO] = { run_io, run_io_dma, run_io_fixed },
		[SPACE_MMIO] = { run_mmio, run_mmio_dma, run_mmio_fixed },
		[SPACE_PCI] = { run_pci, run_pci_dma, run_pci_fixed },
	};

	loops[r->space][value_mode(r)](r, first, stop);
}

static void run_print(const struct range *r, uint64_t first, uint64_t stop)
{
	for (uint64_t i = first; i < stop; i++) {
		struct op op = gen_op_values(r, i, value_mode(r)); /* printing dominates: a branch is nothing here */

		printf("%" PRIu64 " %" PRIu64 " %c 0x%" PRIx64 " %" PRIu64 " 0x%" PRIx64 "\n", r->index, i,
		       op.kind, op.port, op.width, op.value);
	}
}

/* ---- read-backs (--readback): what the device answers, for guided fuzzing ----
 *
 * A guided program's step can put a device into a new state without firing a
 * trace event (a queue address latched, an enable bit that a status register
 * now shows). The registers' answers show it: with --readback the executor
 * prints, at each range's end, a digest of what its reads returned --
 *   @RB <range_index> [<offset>:<class>...]
 * <offset> in hex from the range's start. A range with a read phase reports
 * the values of that phase (as many of its reads as this invocation made); a
 * fuzz-only (!) range gets one extra read of each of the lowest RB_MAX_PAIRS
 * slots it wrote, after its last op. At most RB_MAX_PAIRS pairs, the lowest
 * offsets first; a zero answer (the reset state of nearly every register)
 * makes no pair. Classes (keep identical to avocado_iofuzz/guided/readback.py):
 *   f      all ones at the access width (nothing decodes, or a register full)
 *   w      the last value this invocation wrote to that address at that width
 *          (a latch: what a register holds because we put it there is no news)
 *   s      an address inside the scratch memory (a DMA base the device kept)
 *   p      a page frame number inside the scratch memory
 *   m      more than 8 bits set (an address or a random value held)
 *   bNK    otherwise: N = the low 4 bits in hex, K = the bucket of the value's
 *          set bits (1, 2, 3-4, 5-8 -> 0..3)
 * The writes are remembered in a direct-mapped table of RB_LATCHES entries
 * (index: mix64 of the key), per invocation: a write evicts whatever shared
 * its entry. Without --readback nothing here runs: the loops and the output
 * are as before. */

#define RB_MAX_PAIRS 16
#define RB_LATCHES 4096

struct rb_pair {
	uint64_t offset;
	char class[4];
};

struct rb_latch {
	uint64_t key; /* 0: empty */
	uint64_t value;
};

static int readback;			 /* --readback */
static struct rb_pair rb_pairs[RB_MAX_PAIRS]; /* the digest of the current range */
static int rb_count;
static struct rb_latch rb_latches[RB_LATCHES];

static inline uint64_t rb_key(const struct range *r, uint64_t address)
{
	return address << 8 | (uint64_t)r->space << 4 | r->width; /* never 0: width >= 1 */
}

static inline struct rb_latch *rb_latch_of(uint64_t key)
{
	return &rb_latches[mix64(key) & (RB_LATCHES - 1)];
}

static unsigned rb_popcount_bucket(unsigned bits)
{
	return bits <= 2 ? bits - 1 : bits <= 4 ? 2 : 3;
}

/* The class of `value` read from `address` of r into `out`; 0 for a zero answer (no pair). */
static int rb_class(const struct range *r, uint64_t address, uint64_t value, char out[4])
{
	uint64_t mask = r->width >= 8 ? ~0ULL : (1ULL << (8 * r->width)) - 1;
	uint64_t scratch_end = scratch_base + scratch_size;
	uint64_t key = rb_key(r, address);
	const struct rb_latch *latch = rb_latch_of(key);
	unsigned bits;

	value &= mask;
	if (!value)
		return 0;
	bits = (unsigned)__builtin_popcountll(value);
	if (value == mask)
		strcpy(out, "f");
	else if (latch->key == key && value == (latch->value & mask))
		strcpy(out, "w");
	else if (scratch_size && value >= scratch_base && value < scratch_end)
		strcpy(out, "s");
	else if (scratch_size && value >= scratch_base >> 12 && value < (scratch_end + PAGE_SIZE_BYTES - 1) >> 12)
		strcpy(out, "p");
	else if (bits > 8)
		strcpy(out, "m");
	else
		snprintf(out, 4, "b%x%u", (unsigned)(value & 0xf), rb_popcount_bucket(bits));
	return 1;
}

static void rb_note(const struct range *r, uint64_t slot, uint64_t value)
{
	if (rb_count < RB_MAX_PAIRS && rb_class(r, r->start + slot * r->width, value, rb_pairs[rb_count].class))
		rb_pairs[rb_count++].offset = slot * r->width;
}

/* One read of r's width at `address` of r's space, returning the value; `op_index` for a pci failure. */
static uint64_t rb_read(const struct range *r, uint64_t address, uint64_t op_index)
{
	if (r->space == SPACE_PIO) {
		uint16_t port = (uint16_t)address;

		if (r->width == 1) {
			uint8_t v;
			__asm__ __volatile__("inb %w1, %b0" : "=a"(v) : "Nd"(port));
			return v;
		}
		if (r->width == 2) {
			uint16_t v;
			__asm__ __volatile__("inw %w1, %w0" : "=a"(v) : "Nd"(port));
			return v;
		}
		uint32_t v;
		__asm__ __volatile__("inl %w1, %0" : "=a"(v) : "Nd"(port));
		return v;
	}
	if (r->space == SPACE_MMIO) {
		volatile uint8_t *p = r->mmio + (address - r->start);

		if (r->width == 1)
			return *p;
		if (r->width == 2)
			return *(volatile uint16_t *)p;
		if (r->width == 4)
			return *(volatile uint32_t *)p;
		return *(volatile uint64_t *)p;
	}
	uint32_t value = 0;

	if (stop_signal) {
		pci_position = op_index;
		leave_pci_range(1);
	}
	if (pread(r->config_fd, &value, r->width, (off_t)(address & 0xfff)) != (ssize_t)r->width) {
		pci_position = op_index;
		fail(EXIT_RUNTIME, "range %" PRIu64 ": read-back of config register 0x%llx failed: %s", r->index,
		     (unsigned long long)(address & 0xfff), strerror(errno));
	}
	return value;
}

/* run_range one op at a time: the read phase's values kept, every write remembered. */
static void run_range_read_back(const struct range *r, uint64_t first, uint64_t stop)
{
	for (uint64_t i = first; i < stop; i++) {
		struct op op = gen_op_values(r, i, value_mode(r));

		if (op.kind == 'r') { /* only the read phase reads */
			rb_note(r, i, rb_read(r, op.port, i));
			continue;
		}
		run_range(r, i, i + 1);
		struct rb_latch *latch = rb_latch_of(rb_key(r, op.port));

		latch->key = rb_key(r, op.port);
		latch->value = op.value;
	}
}

/* A fuzz-only range's end: read back the lowest RB_MAX_PAIRS slots it wrote. */
static void read_back_writes(const struct range *r)
{
	uint64_t slots[RB_MAX_PAIRS];
	int n = 0;

	for (uint64_t i = 0; i < r->op_count; i++) { /* the ops again: a pure function of the range */
		uint64_t slot = (gen_op_values(r, i, value_mode(r)).port - r->start) / r->width;
		int k = 0;

		while (k < n && slots[k] < slot)
			k++;
		if ((k < n && slots[k] == slot) || k == RB_MAX_PAIRS)
			continue;
		if (n == RB_MAX_PAIRS)
			n--; /* the highest slot makes room */
		memmove(&slots[k + 1], &slots[k], (size_t)(n - k) * sizeof(slots[0]));
		slots[k] = slot;
		n++;
	}
	for (int k = 0; k < n; k++)
		rb_note(r, slots[k], rb_read(r, r->start + slots[k] * r->width, r->op_count));
}

/* At a range's end under --readback: the fuzz-only read-backs, then the @RB line. */
static void report_read_back(const struct range *r)
{
	char line[16 + RB_MAX_PAIRS * 24];
	int len;

	if (!r->lead)
		read_back_writes(r);
	len = snprintf(line, sizeof(line), "@RB %" PRIu64, r->index);
	for (int k = 0; k < rb_count; k++)
		len += snprintf(line + len, sizeof(line) - (size_t)len, " %" PRIx64 ":%s", rb_pairs[k].offset,
				rb_pairs[k].class);
	emit("%s", line);
}

/* Dry --limit-loop: generate without printing, to time the generator alone. */
static volatile uint64_t sink;

static inline __attribute__((always_inline)) void sink_loop(const struct range *r, uint64_t first, uint64_t stop,
							      enum value_mode mode)
{
	uint64_t acc = 0;

	for (uint64_t i = first; i < stop; i++) {
		struct op op = gen_op_values(r, i, mode);

		acc += op.port ^ op.value ^ (uint64_t)op.kind;
	}
	sink += acc;
}

static void run_sink(const struct range *r, uint64_t first, uint64_t stop)
{
	if (value_mode(r) == VALUES_FIXED)
		sink_loop(r, first, stop, VALUES_FIXED);
	else if (r->dma)
		sink_loop(r, first, stop, VALUES_DMA);
	else
		sink_loop(r, first, stop, VALUES_UNIFORM);
}

/*
 * --bare-loop: the cost of the accesses alone, the ceiling the real loop is
 * measured against. The first BARE_TABLE_OPS ops of the range are generated
 * once into a table, then the table is replayed cyclically until the range's
 * op count is reached: same ports, widths, kinds and value distribution as
 * the real run, but no generator, no marks, nothing else in the loop.
 */
struct table_op {
	uint16_t port;
	uint8_t is_read;
	uint32_t value;
};

static struct table_op bare_table[BARE_TABLE_OPS];

static void run_bare(const struct range *r, uint64_t first, uint64_t stop)
{
	uint64_t period = stop - first < BARE_TABLE_OPS ? stop - first : BARE_TABLE_OPS;
	uint64_t width = r->width;

	for (uint64_t j = 0; j < period; j++) {
		struct op op = gen_op_values(r, first + j, value_mode(r));

		bare_table[j] = (struct table_op){ (uint16_t)op.port, op.kind == 'r', (uint32_t)op.value };
	}
	for (uint64_t i = first; i < stop;) {
		uint64_t chunk = stop - i < period ? stop - i : period;

		for (uint64_t j = 0; j < chunk; j++) {
			const struct table_op *op = &bare_table[j];

			if (op->is_read)
				port_read(op->port, width);
			else
				port_write(op->port, width, op->value);
		}
		i += chunk;
	}
}

/* ---- the scratch memory of +dma ranges ----------------------------------- */

static void print_fill(const struct range *r, uint64_t op_index)
{
	const volatile uint8_t *bytes = (const volatile uint8_t *)scratch_words;

	printf("M %" PRIu64 " %" PRIu64 " ", r->index, op_index);
	for (uint64_t b = 0; b < scratch_size; b++)
		printf("%02x", bytes[b]);
	putchar('\n');
}

/*
 * Ops first..stop-1 of r, the first op of this invocation in r being
 * `entered`: a +dma range gets its scratch memory filled before `entered` and
 * before every multiple of SCRATCH_EPOCH_OPS (the device may have written
 * into it meanwhile). `loop` is the uniform or the dma loop of the range.
 */
static void run_with_fills(const struct range *r, uint64_t first, uint64_t stop, uint64_t entered, int print,
			   void (*loop)(const struct range *, uint64_t, uint64_t))
{
	if (!r->dma) {
		loop(r, first, stop);
		return;
	}
	while (first < stop) {
		uint64_t boundary = (first / SCRATCH_EPOCH_OPS + 1) * SCRATCH_EPOCH_OPS;
		uint64_t end = stop < boundary ? stop : boundary;

		if (first == entered || first % SCRATCH_EPOCH_OPS == 0) {
			fill_scratch(r, first / SCRATCH_EPOCH_OPS, scratch_words);
			if (print)
				print_fill(r, first);
		}
		loop(r, first, end);
		first = end;
	}
}

/*
 * A paced range (~E:U): ops first..stop-1 in stretches that end at multiples of
 * E, with a sleep of U us before each such op. The loops themselves are
 * untouched: an unpaced range never gets here. No sleep under --dry-run
 * (printing is its only job) and none before the range's op 0.
 */
static void run_paced(const struct range *r, uint64_t first, uint64_t stop, uint64_t entered, int print,
		      void (*loop)(const struct range *, uint64_t, uint64_t))
{
	if (!r->pause_every) {
		run_with_fills(r, first, stop, entered, print, loop);
		return;
	}
	while (first < stop) {
		uint64_t boundary = (first / r->pause_every + 1) * r->pause_every;
		uint64_t end = stop < boundary ? stop : boundary;

		if (first && first % r->pause_every == 0 && !print) {
			struct timespec ts = { (time_t)(r->pause_us / 1000000), (long)(r->pause_us % 1000000) * 1000 };

			while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
				;
		}
		run_with_fills(r, first, end, entered, print, loop);
		first = end;
	}
}

/* ---- protocol output ------------------------------------------------- */

/*
 * One protocol line, pushed out before the caller continues: stdio is flushed
 * first (dry-run op lines must stay in order), then the line is written with
 * write(2) and, on a tty, drained to the UART. Without the drain the 8250
 * driver could still hold the line when the guest hangs.
 */
static void emit(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int len;

	fflush(stdout);
	va_start(ap, fmt);
	len = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	if ((size_t)len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	for (int done = 0; done < len;) {
		ssize_t n = write(STDOUT_FILENO, line + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		done += n;
	}
	if (out_is_tty)
		tcdrain(STDOUT_FILENO);
}

static void __attribute__((noreturn, format(printf, 2, 3))) fail(int status, const char *fmt, ...)
{
	char message[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	leave_pci_range(0); /* a failure inside a pci range still puts its header back */
	emit("@ERR %s", message);
	exit(status);
}

/* ---- argument parsing ------------------------------------------------ */

/* Strict: decimal, or hex with 0x; no sign, no blanks, no trailing junk. */
static int parse_u64(const char *text, uint64_t *out)
{
	int base = 10;
	char *end;

	if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
		base = 16;
		text += 2;
	}
	if (!((text[0] >= '0' && text[0] <= '9') || (base == 16 && strchr("abcdefABCDEF", text[0]) && text[0])))
		return -1;
	errno = 0;
	*out = strtoull(text, &end, base);
	return (errno || *end) ? -1 : 0;
}

static uint64_t parse_number(const char *what, const char *text, uint64_t max)
{
	uint64_t value;

	if (parse_u64(text, &value) < 0)
		fail(EXIT_USAGE, "%s: '%s' is not a number (decimal, or hex with 0x)", what, text);
	if (value > max)
		fail(EXIT_USAGE, "%s: %s is greater than the maximum %" PRIu64, what, text, max);
	return value;
}

static uint64_t parse_hex_bound(const char *arg, const char *text, enum space space)
{
	static const unsigned long long max_address[] = { MAX_PORT, UINT64_MAX, MAX_PCI_ADDRESS };
	uint64_t value;

	if (!(text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) || parse_u64(text, &value) < 0)
		fail(EXIT_USAGE, "range '%s': bound '%s' must be hex with a 0x prefix", arg, text);
	if (value > max_address[space])
		fail(EXIT_USAGE, "range '%s': %s address %s is above 0x%llx", arg, space_names[space], text,
		     max_address[space]);
	return value;
}

static int parse_space(const char *text, enum space *space)
{
	for (int s = SPACE_PIO; s <= SPACE_PCI; s++) {
		if (strcmp(text, space_names[s]) == 0) {
			*space = (enum space)s;
			return 0;
		}
	}
	return -1;
}

static void parse_position(const char *option, const char *text, struct position *pos)
{
	char buf[64];
	char *colon;

	if (strlen(text) >= sizeof(buf) || !(colon = strchr(strcpy(buf, text), ':')))
		fail(EXIT_USAGE, "%s: expected RANGE_INDEX:OP_INDEX, got '%s'", option, text);
	*colon = '\0';
	pos->range_index = parse_number(option, buf, UINT64_MAX);
	pos->op_index = parse_number(option, colon + 1, UINT64_MAX);
	pos->set = 1;
}

/* a range names a scratch layout this executor does not have: the message lists the ones it has */
static void __attribute__((noreturn)) fail_unknown_layout(const char *arg, const char *name)
{
	char known[512] = "";

	for (int layout = LAYOUT_GENERIC + 1; layout < LAYOUT_COUNT; layout++) {
		strncat(known, layout_names[layout], sizeof(known) - strlen(known) - 3);
		if (layout + 1 < LAYOUT_COUNT)
			strncat(known, ", ", sizeof(known) - strlen(known) - 1);
	}
	fail(EXIT_USAGE, "range '%s': scratch layout '%s' is not one of %s", arg, name, known);
}

static void parse_range(const char *arg, uint64_t default_index, uint64_t seed, uint64_t fuzz_count,
			struct range *r)
{
	char buf[MAX_RANGE_WORD];
	char *bounds, *dash, *slash, *colon, *comma, *plus, *tilde, *at, *bang;
	int have_index = 0, have_space = 0;

	if (strlen(arg) >= sizeof(buf))
		fail(EXIT_USAGE, "range '%.40s...': too long", arg);
	strcpy(buf, arg);
	bounds = buf;
	r->index = default_index;
	r->space = SPACE_PIO;
	r->mmio = NULL;
	r->config_fd = -1;
	bang = strchr(buf, '!'); /* fuzz-only, maybe with a fixed value: cut out first, wherever it stands */
	r->has_fixed = 0;
	r->fixed = 0;
	if (bang) {
		char *after = bang + 1;

		if (after[0] >= '0' && after[0] <= '9') { /* !0xV: no other field starts with a digit */
			char saved, *digits = after + 2;
			int n = 0;

			if (after[0] != '0' || (after[1] != 'x' && after[1] != 'X'))
				fail(EXIT_USAGE, "range '%s': a fixed value must be hex with a 0x prefix (!0xVALUE)", arg);
			while (digits[n] && strchr("0123456789abcdefABCDEF", digits[n]))
				n++;
			if (n == 0 || n > 16)
				fail(EXIT_USAGE, "range '%s': a fixed value needs 1 to 16 hex digits after !0x", arg);
			saved = digits[n];
			digits[n] = '\0';
			r->fixed = strtoull(digits, NULL, 16);
			digits[n] = saved;
			r->has_fixed = 1;
			after = digits + n;
		}
		memmove(bang, after, strlen(after) + 1);
	}
	tilde = strchr(buf, '~'); /* first: its ':' is not a prefix's */
	r->pause_every = r->pause_us = 0;
	if (tilde) {
		char *sep = strchr(tilde + 1, ':');

		*tilde = '\0';
		if (!sep)
			fail(EXIT_USAGE, "range '%s': pacing must be ~EVERY:MICROSECONDS", arg);
		*sep = '\0';
		r->pause_every = parse_number("range pause interval", tilde + 1, MAX_OP_COUNT);
		r->pause_us = parse_number("range pause", sep + 1, 1000000);
		if (!r->pause_every)
			fail(EXIT_USAGE, "range '%s': the pause interval must be at least 1 op", arg);
	}
	at = strchr(buf, '@'); /* the range's own seed: after the pacing is cut off, before the value mode */
	if (at) {
		*at = '\0';
		if (!at[1])
			fail(EXIT_USAGE, "range '%s': '@' must be followed by the range's seed", arg);
		seed = parse_number("range seed", at + 1, UINT64_MAX);
	}
	/* up to two prefixes, in this order: the index (digits), then the space */
	while ((colon = strchr(bounds, ':'))) {
		*colon = '\0';
		if (!have_index && !have_space && bounds[0] >= '0' && bounds[0] <= '9') {
			r->index = parse_number("range index", bounds, 0xffffffffULL);
			have_index = 1;
		} else if (!have_space && parse_space(bounds, &r->space) == 0) {
			have_space = 1;
		} else {
			fail(EXIT_USAGE, "range '%s': '%s' is neither a range index nor a space (pio, mmio, pci)", arg,
			     bounds);
		}
		bounds = colon + 1;
	}
	plus = strchr(bounds, '+');
	r->dma = 0;
	r->layout = LAYOUT_GENERIC;
	if (plus) {
		char *equals = strchr(plus + 1, '=');

		*plus = '\0';
		if (equals) { /* +dma=LAYOUT */
			*equals = '\0';
			for (r->layout = LAYOUT_GENERIC + 1; r->layout < LAYOUT_COUNT; r->layout++)
				if (strcmp(equals + 1, layout_names[r->layout]) == 0)
					break;
			if (r->layout == LAYOUT_COUNT)
				fail_unknown_layout(arg, equals + 1);
		}
		if (strcmp(plus + 1, "dma") != 0)
			fail(EXIT_USAGE, "range '%s': value mode '%s' is not dma (uniform has no suffix)", arg, plus + 1);
		r->dma = 1;
	}
	comma = strchr(bounds, ',');
	if (comma) {
		*comma = '\0';
		fuzz_count = parse_number("range fuzz count", comma + 1, MAX_FUZZ_COUNT);
	}
	r->width = 1;
	slash = strchr(bounds, '/');
	if (slash) {
		uint64_t max_width = r->space == SPACE_MMIO ? 8 : 4;

		*slash = '\0';
		r->width = parse_number("range width", slash + 1, max_width);
		if (r->width != 1 && r->width != 2 && r->width != 4 && r->width != 8)
			fail(EXIT_USAGE, "range '%s': width must be %s", arg,
			     r->space == SPACE_MMIO ? "1, 2, 4 or 8" : "1, 2 or 4");
	}
	dash = strchr(bounds, '-');
	if (!dash)
		fail(EXIT_USAGE, "range '%s': expected [I:][SPACE:]0xSTART-0xEND[/W][,N]", arg);
	*dash = '\0';
	r->start = parse_hex_bound(arg, bounds, r->space);
	r->end = parse_hex_bound(arg, dash + 1, r->space);
	if (r->start > r->end)
		fail(EXIT_USAGE, "range '%s': start is greater than end", arg);
	if (r->end - r->start == UINT64_MAX || (r->end - r->start + 1) % r->width)
		fail(EXIT_USAGE, "range '%s': size %" PRIu64 " is not a multiple of width %" PRIu64, arg,
		     r->end - r->start + 1, r->width);
	if (r->space != SPACE_PIO && r->start % r->width)
		fail(EXIT_USAGE, "range '%s': start is not aligned to width %" PRIu64, arg, r->width);
	if (r->space == SPACE_PCI && r->start >> 12 != r->end >> 12)
		fail(EXIT_USAGE, "range '%s': a pci range must stay within one function's config space", arg);
	r->slots = (r->end - r->start + 1) / r->width;
	if (fuzz_count + 2 > (MAX_OP_COUNT - 1) / r->slots)
		fail(EXIT_USAGE, "range '%s': too many ops (2**62 or more)", arg);
	if (bang && !fuzz_count)
		fail(EXIT_USAGE, "range '%s': a fuzz-only (!) range needs a fuzz count of at least 1", arg);
	if (r->has_fixed && r->width < 8 && r->fixed >> (8 * r->width))
		fail(EXIT_USAGE, "range '%s': fixed value 0x%" PRIx64 " does not fit in %" PRIu64 " byte(s)", arg, r->fixed,
		     r->width);
	r->lead = bang ? 0 : 2 * r->slots;
	r->op_count = fuzz_count * r->slots + r->lead;
	r->rseed = range_seed(seed, r->start, r->end);
}

static struct range *find_range(struct range *ranges, int n, const char *option, const struct position *pos)
{
	for (int i = 0; i < n; i++)
		if (ranges[i].index == pos->range_index)
			return &ranges[i];
	fail(EXIT_USAGE, "%s: no range with index %" PRIu64, option, pos->range_index);
}

/*
 * --ranges-stdin: the RANGE words, blank separated, from stdin. A shell line
 * editor may cap a command line (busybox ash: 1024 bytes); a here-document
 * of short lines carries any number of ranges.
 */
static char **read_range_words(int *count)
{
	static char words[MAX_RANGES][MAX_RANGE_WORD];
	static char *pointers[MAX_RANGES];
	char format[16];
	int n = 0;

	snprintf(format, sizeof(format), "%%%zus", sizeof(words[0]) - 1);
	while (n < MAX_RANGES && scanf(format, words[n]) == 1) {
		if (strlen(words[n]) == sizeof(words[0]) - 1)
			fail(EXIT_USAGE, "--ranges-stdin: range '%.40s...' is too long", words[n]);
		pointers[n] = words[n];
		n++;
	}
	if (n == MAX_RANGES && scanf(format, words[0]) == 1)
		fail(EXIT_USAGE, "--ranges-stdin: more than %d ranges", MAX_RANGES);
	*count = n;
	return pointers;
}

static void usage(void)
{
	fputs("usage: iofuzz-exec [--dry-run | --check] [--limit-loop | --bare-loop] --seed S --fuzz-count N\n"
	      "                   [--report-every K] [--resume I:J] [--hang-at I:J]\n"
	      "                   [--scratch 0xBASE-0xEND] [--no-pci-restore]\n"
	      "                   [I:][pio:|mmio:|pci:]0xSTART-0xEND[/W][,N][!|!0xV][+dma[=LAYOUT]][@S][~E:U]...\n"
	      "  RANGE@S         the range's own seed S instead of --seed (~E:U: pause U us every E ops)\n"
	      "  RANGE,N!        fuzz-only: the N seeded writes per slot alone (no read, no zero phase)\n"
	      "  RANGE,N!0xV     fuzz-only with a fixed value: every write writes V (hex, fits width W)\n"
	      "  --dry-run       print the ops instead of performing them (safe anywhere)\n"
	      "  --check         set up every range's access path, report refusals (@DENIED), no op\n"
	      "  --ranges-stdin  read the RANGE words from stdin (blank separated) instead\n"
	      "  --limit-loop    benchmark: no progress marks, prints only @DONE\n"
	      "  --bare-loop     benchmark: the accesses alone, replayed from a table of the first\n"
	      "                  ops (no generator, no marks), prints only @DONE\n"
	      "  --resume I:J    start at op J of the range with index I\n"
	      "  --hang-at I:J   FAULT INJECTION for tests: hang the guest before op J of range I\n"
	      "  --scratch 0xBASE-0xEND  the scratch memory of +dma ranges (reserved with memmap=SIZE$BASE)\n"
	      "  --no-pci-restore  leave a pci range's function header as its ops left it (BARs, command...)\n"
	      "  --pci-saved I:TYPE:0xCMD[:0xV...]  the header to put back for range I (as @SAVED printed it)\n"
	      "  --readback      print @RB, a digest of what each range's reads returned, at its end\n"
	      "   or: iofuzz-exec [--dry-run] [--report-every K] --script FILE|-\n"
	      "  --script FILE   replay a qtest script's port I/O and MMIO (outb/inb, writel/readl...; - is stdin)\n",
	      stderr);
}

/* ---- access paths: set up before the first op ---------------------------- */

/*
 * Errors that mean "the guest kernel does not let us", as opposed to a bug:
 * lockdown and STRICT_DEVMEM refuse with EPERM, a missing /dev/mem is
 * ENOENT, and a BAR that a driver claims exclusively (iomem=strict) makes
 * mmap of its sysfs file fail with EINVAL.
 */
static int is_refusal(int err)
{
	return err == EPERM || err == EACCES || err == ENOENT || err == EINVAL;
}

/* Which sysfs BAR file holds [start, end] (a BAR with `kind` in its flags), and the address of its first page. */
static int find_bar(uint64_t start, uint64_t end, uint64_t kind, char *path, size_t path_size, uint64_t *file_base)
{
	DIR *dir = opendir(PCI_DEVICES_DIR);
	struct dirent *entry;
	int found = 0;

	if (!dir)
		return 0;
	while (!found && (entry = readdir(dir))) {
		char name[512];
		unsigned long long bar_start, bar_end, flags;
		FILE *f;

		if (entry->d_name[0] == '.')
			continue;
		snprintf(name, sizeof(name), "%s/%s/resource", PCI_DEVICES_DIR, entry->d_name);
		f = fopen(name, "r");
		if (!f)
			continue;
		/* lines 0-5 are the BARs, each with a resourceN file; the ROM and bridge windows follow */
		for (int bar = 0; bar < 6 && fscanf(f, "%llx %llx %llx", &bar_start, &bar_end, &flags) == 3; bar++) {
			if ((flags & kind) && bar_start <= start && end <= bar_end && bar_end > 0) {
				snprintf(path, path_size, "%s/%s/resource%d", PCI_DEVICES_DIR, entry->d_name, bar);
				*file_base = bar_start & ~(PAGE_SIZE_BYTES - 1);
				found = 1;
				break;
			}
		}
		fclose(f);
	}
	closedir(dir);
	return found;
}

static int find_bar_file(uint64_t start, uint64_t end, char *path, size_t path_size, uint64_t *file_base)
{
	return find_bar(start, end, IORESOURCE_MEM, path, path_size, file_base);
}

/*
 * A +dma range's device must master the bus, or its DMA goes nowhere. No
 * driver in the embedded guests turns that on, so the executor sets the
 * command register's bus master bit of the PCI function whose BAR holds the
 * range (a qtest replay's PCI setup sets it too). Ranges outside any BAR
 * (legacy ports, /proc/iomem devices) are left as they are.
 */
static void enable_bus_master(const struct range *r)
{
	char path[600];
	uint64_t base;
	uint16_t command;
	int fd;

	if (r->space == SPACE_PCI ||
	    !find_bar(r->start, r->end, r->space == SPACE_PIO ? IORESOURCE_IO : IORESOURCE_MEM, path, sizeof(path), &base))
		return;
	strcpy(strrchr(path, '/') + 1, "config");
	fd = open(path, O_RDWR);
	if (fd < 0 || pread(fd, &command, 2, 4) != 2)
		fail(EXIT_RUNTIME, "range %" PRIu64 ": cannot read the command register in %s: %s", r->index, path,
		     strerror(errno));
	if (!(command & PCI_COMMAND_MASTER)) {
		command |= PCI_COMMAND_MASTER;
		if (pwrite(fd, &command, 2, 4) != 2)
			fail(EXIT_RUNTIME, "range %" PRIu64 ": cannot turn on bus mastering in %s: %s", r->index, path,
			     strerror(errno));
	}
	close(fd);
}

/* Map an mmio range uncached; 0, or -1 with `why` set when the kernel refuses. */
static int setup_mmio(struct range *r, char *why, size_t why_size)
{
	char path[600] = "/dev/mem";
	uint64_t file_base = 0, offset, map_offset, length;
	void *map;
	int fd;

	find_bar_file(r->start, r->end, path, sizeof(path), &file_base);
	/* O_SYNC: /dev/mem then maps uncached, as a driver's ioremap would */
	fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0) {
		if (!is_refusal(errno))
			fail(EXIT_RUNTIME, "range %" PRIu64 ": cannot open %s: %s", r->index, path, strerror(errno));
		snprintf(why, why_size, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	offset = r->start - file_base;
	map_offset = offset & ~(PAGE_SIZE_BYTES - 1);
	length = ((offset - map_offset) + (r->end - r->start) + PAGE_SIZE_BYTES) & ~(PAGE_SIZE_BYTES - 1);
	map = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)map_offset);
	close(fd); /* the mapping stays */
	if (map == MAP_FAILED) {
		if (!is_refusal(errno))
			fail(EXIT_RUNTIME, "range %" PRIu64 ": cannot mmap %s: %s", r->index, path, strerror(errno));
		snprintf(why, why_size, "cannot mmap 0x%" PRIx64 "-0x%" PRIx64 " through %s: %s", r->start, r->end, path,
			 strerror(errno));
		return -1;
	}
	r->mmio = (volatile uint8_t *)map + (offset - map_offset);
	return 0;
}

/* Open a function's config file and learn whether writes are allowed (lockdown refuses them). */
static int setup_pci(struct range *r, char *why, size_t why_size)
{
	char path[128];
	uint8_t vendor_low;

	snprintf(path, sizeof(path), PCI_DEVICES_DIR "/0000:%02x:%02x.%x/config", (unsigned)(r->start >> 20) & 0xff,
		 (unsigned)(r->start >> 15) & 0x1f, (unsigned)(r->start >> 12) & 0x7);
	r->config_fd = open(path, O_RDWR);
	if (r->config_fd < 0) {
		if (!is_refusal(errno))
			fail(EXIT_RUNTIME, "range %" PRIu64 ": cannot open %s: %s", r->index, path, strerror(errno));
		snprintf(why, why_size, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	/* the vendor ID is read-only: writing its own value back changes nothing */
	if (pread(r->config_fd, &vendor_low, 1, 0) != 1 || pwrite(r->config_fd, &vendor_low, 1, 0) != 1) {
		int err = errno;

		if (!is_refusal(err))
			fail(EXIT_RUNTIME, "range %" PRIu64 ": config access through %s failed: %s", r->index, path,
			     strerror(err));
		snprintf(why, why_size, "config write through %s refused: %s", path, strerror(err));
		close(r->config_fd);
		r->config_fd = -1;
		return -1;
	}
	return 0;
}

/*
 * Set up every range's access path; print @DENIED for each refused one.
 * Returns how many were refused. Only called after the guest marker check.
 */
static int setup_access(struct range *ranges, int n_ranges)
{
	int refused = 0, iopl_done = 0, iopl_errno = 0;
	char why[800];

	for (int i = 0; i < n_ranges; i++) {
		struct range *r = &ranges[i];
		int result = 0;

		if (r->space == SPACE_PIO) {
			if (!iopl_done) {
				iopl_done = 1;
				if (syscall(SYS_iopl, 3) < 0) {
					iopl_errno = errno;
					if (!is_refusal(iopl_errno))
						fail(EXIT_RUNTIME, "iopl(3) failed: %s (needs root and CONFIG_X86_IOPL_IOPERM)",
						     strerror(iopl_errno));
				}
			}
			if (iopl_errno) {
				snprintf(why, sizeof(why), "iopl(3) refused: %s", strerror(iopl_errno));
				result = -1;
			}
		} else if (r->space == SPACE_MMIO) {
			result = setup_mmio(r, why, sizeof(why));
		} else {
			result = setup_pci(r, why, sizeof(why));
		}
		if (result < 0) {
			emit("@DENIED %" PRIu64 " %s", r->index, why);
			refused++;
		}
	}
	return refused;
}

/* The kernel's memparse: a number (0x hex or decimal) with an optional K, M, G or T suffix. */
static int parse_memsize(const char *text, char **end, uint64_t *out)
{
	errno = 0;
	*out = strtoull(text, end, 0);
	if (errno || *end == text)
		return -1;
	switch (**end) {
	case 'T': case 't': *out <<= 10; /* fall through */
	case 'G': case 'g': *out <<= 10; /* fall through */
	case 'M': case 'm': *out <<= 10; /* fall through */
	case 'K': case 'k': *out <<= 10; (*end)++; break;
	default: break;
	}
	return 0;
}

/* Whether a memmap=SIZE$BASE entry of the kernel command line reserves the scratch memory. */
static int scratch_reserved(const char *cmdline)
{
	char text[8192];

	snprintf(text, sizeof(text), "%s", cmdline);
	for (char *save, *tok = strtok_r(text, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (strncmp(tok, "memmap=", 7) != 0)
			continue;
		for (char *entry = tok + 7; entry && *entry; entry = strchr(entry, ',') ? strchr(entry, ',') + 1 : NULL) {
			uint64_t size, base;
			char *end;

			if (parse_memsize(entry, &end, &size) < 0 || *end != '$' || parse_memsize(end + 1, &end, &base) < 0)
				continue;
			if (base <= scratch_base && scratch_base + scratch_size <= base + size)
				return 1;
		}
	}
	return 0;
}

/* Map the scratch memory; 0, or -1 with `why` set. Only called after the guest marker check. */
static int setup_scratch(char *why, size_t why_size)
{
	char cmdline[8192];
	ssize_t len;
	void *map;
	int fd = open("/proc/cmdline", O_RDONLY);

	len = fd < 0 ? -1 : read(fd, cmdline, sizeof(cmdline) - 1);
	if (fd >= 0)
		close(fd);
	cmdline[len < 0 ? 0 : len] = '\0';
	/* RAM the kernel uses must never be written: only a region it was told to leave alone */
	if (!scratch_reserved(cmdline)) {
		snprintf(why, why_size,
			 "the kernel command line reserves no memory at 0x%" PRIx64 "-0x%" PRIx64
			 " (boot it with memmap=%" PRIu64 "K$0x%" PRIx64 ")",
			 scratch_base, scratch_base + scratch_size - 1, scratch_size >> 10, scratch_base);
		return -1;
	}
	fd = open("/dev/mem", O_RDWR | O_SYNC);
	if (fd < 0) {
		snprintf(why, why_size, "cannot open /dev/mem: %s", strerror(errno));
		return -1;
	}
	map = mmap(NULL, scratch_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)scratch_base);
	close(fd);
	if (map == MAP_FAILED) {
		snprintf(why, why_size, "cannot mmap 0x%" PRIx64 "-0x%" PRIx64 " through /dev/mem: %s", scratch_base,
			 scratch_base + scratch_size - 1, strerror(errno));
		return -1;
	}
	scratch_words = map;
	return 0;
}

static void parse_scratch(const char *text)
{
	char buf[64];
	char *dash;
	uint64_t end;

	if (strlen(text) >= sizeof(buf) || !(dash = strchr(strcpy(buf, text), '-')))
		fail(EXIT_USAGE, "--scratch: expected 0xBASE-0xEND, got '%s'", text);
	*dash = '\0';
	scratch_base = parse_hex_bound("--scratch", buf, SPACE_MMIO);
	end = parse_hex_bound("--scratch", dash + 1, SPACE_MMIO);
	if (end <= scratch_base || end > 0xffffffffULL)
		fail(EXIT_USAGE, "--scratch %s: the end must be above the base and below 4 GiB (32-bit DMA)", text);
	scratch_size = end - scratch_base + 1;
	if (scratch_size & (scratch_size - 1) || scratch_size < MIN_SCRATCH_SIZE || scratch_base % scratch_size)
		fail(EXIT_USAGE,
		     "--scratch %s: the size must be a power of two of at least 0x%llx bytes, the base aligned to it",
		     text, MIN_SCRATCH_SIZE);
}

/* ---- guest checks and fault injection ----------------------------------- */

static int cmdline_has_marker(void)
{
	char text[8192];
	ssize_t len;
	int fd = open("/proc/cmdline", O_RDONLY);

	if (fd < 0)
		fail(EXIT_RUNTIME, "cannot read /proc/cmdline (%s): refusing real port I/O", strerror(errno));
	len = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (len < 0)
		fail(EXIT_RUNTIME, "cannot read /proc/cmdline (%s): refusing real port I/O", strerror(errno));
	text[len] = '\0';
	for (char *save, *tok = strtok_r(text, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save))
		if (strcmp(tok, GUEST_MARKER) == 0)
			return 1;
	return 0;
}

static unsigned hardware_iopl(void)
{
	uint64_t flags;

	__asm__ __volatile__("pushfq; popq %0" : "=r"(flags));
	return (flags >> 12) & 3;
}

/*
 * Fault injection: make the guest's only vCPU stop serving anything, for
 * real, right after announcing it with @HANG. Kernels before 5.5 grant
 * hardware IOPL 3, which allows cli: interrupts off, then spin. Newer kernels
 * emulate iopl() with the I/O bitmap and forbid cli (#GP), so the executor
 * spins at the top SCHED_FIFO priority with RT throttling off: every other
 * task, the shell and the tty's kworker included, starves. It takes that
 * priority *before* printing @HANG, so a host reacting at once to the line
 * (say with Ctrl-C) already finds the guest deaf.
 */
static void __attribute__((noreturn)) hang_forever(int dry_run, uint64_t range_index, uint64_t op_index)
{
	if (dry_run) {
		/* host-side simulation: silent but killable */
		emit("@HANG %" PRIu64 " %" PRIu64, range_index, op_index);
		for (;;)
			pause();
	}
	if (hardware_iopl() == 3) {
		emit("@HANG %" PRIu64 " %" PRIu64, range_index, op_index);
		__asm__ __volatile__("cli");
		for (;;)
			__asm__ __volatile__("" ::: "memory");
	}
	int fd = open("/proc/sys/kernel/sched_rt_runtime_us", O_WRONLY);

	if (fd < 0 || write(fd, "-1", 2) != 2)
		fprintf(stderr, "iofuzz-exec: cannot disable RT throttling (%s): the guest stays partly responsive\n",
			strerror(errno));
	if (fd >= 0)
		close(fd);
	struct sched_param param = { .sched_priority = sched_get_priority_max(SCHED_FIFO) };

	if (sched_setscheduler(0, SCHED_FIFO, &param) < 0)
		fprintf(stderr, "iofuzz-exec: SCHED_FIFO failed (%s): the guest stays responsive\n", strerror(errno));
	emit("@HANG %" PRIu64 " %" PRIu64, range_index, op_index);
	for (;;)
		__asm__ __volatile__("" ::: "memory");
}

/* ---- --script: replay a qtest script's port I/O and MMIO (crash triage) ----
 *
 * The reproducers of avocado_iofuzz/repro are qtest scripts: one command per
 * line, outb|outw|outl PORT VALUE, inb|inw|inl PORT, writeb|w|l|q ADDR VALUE
 * or readb|w|l|q ADDR (numbers in hex with 0x or decimal; '#' comments and
 * blank lines skipped; PCI config ops are port I/O at 0xcf8/0xcfc). The whole
 * file is parsed, and every MMIO page mapped, before the first access: a bad
 * line or a refused mapping never leaves half a replay behind. The ops are
 * one range (index 0) for the protocol: READY, @P 0 <done> every K ops and at
 * the end, @DONE. --dry-run prints them in the dry-run format.
 */
struct script_op {
	uint64_t address;
	uint64_t value;
	volatile uint8_t *mmio; /* where an MMIO op's address is mapped; NULL for port I/O */
	uint8_t width;
	uint8_t is_read;
};

static int script_width(char suffix)
{
	return suffix == 'b' ? 1 : suffix == 'w' ? 2 : suffix == 'l' ? 4 : suffix == 'q' ? 8 : 0;
}

/* "outb" -> port write, "readq" -> MMIO read...; 0 for anything else. */
static int script_command(const char *command, int *is_mmio, int *is_read)
{
	size_t length = strlen(command);
	int width = length ? script_width(command[length - 1]) : 0;

	if (!width)
		return 0;
	*is_mmio = !strncmp(command, "read", 4) || !strncmp(command, "write", 5);
	*is_read = !strncmp(command, "in", 2) || !strncmp(command, "read", 4);
	if (*is_mmio ? length != (*is_read ? 5u : 6u) : (length != (*is_read ? 3u : 4u) || width == 8))
		return 0;
	if (!*is_mmio && strncmp(command, *is_read ? "in" : "out", *is_read ? 2 : 3))
		return 0;
	return width;
}

static struct script_op *read_script(const char *path, uint64_t *count)
{
	FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	struct script_op *ops = NULL;
	uint64_t n = 0, capacity = 0, lineno = 0;
	char line[256];

	if (!in)
		fail(EXIT_USAGE, "--script %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), in)) {
		char command[8], address_text[32], value_text[32], extra[2];
		uint64_t address, value = 0;
		int words, width, is_mmio = 0, is_read = 0;

		lineno++;
		if (!strchr(line, '\n') && !feof(in))
			fail(EXIT_USAGE, "script line %" PRIu64 ": longer than %zu characters", lineno, sizeof(line) - 2);
		words = sscanf(line, "%7s %31s %31s %1s", command, address_text, value_text, extra);
		if (words <= 0 || command[0] == '#')
			continue;
		width = script_command(command, &is_mmio, &is_read);
		if (!width)
			fail(EXIT_USAGE,
			     "script line %" PRIu64 ": unknown command '%s' (in/out b/w/l, read/write b/w/l/q)", lineno,
			     command);
		if (words != (is_read ? 2 : 3))
			fail(EXIT_USAGE, "script line %" PRIu64 ": %s takes %d argument(s)", lineno, command,
			     is_read ? 1 : 2);
		if (parse_u64(address_text, &address) < 0 || (!is_mmio && address > MAX_PORT))
			fail(EXIT_USAGE, "script line %" PRIu64 ": bad address '%s'", lineno, address_text);
		if (!is_read && (parse_u64(value_text, &value) < 0 || (width < 8 && value >> (8 * width))))
			fail(EXIT_USAGE, "script line %" PRIu64 ": bad value '%s' for %d byte(s)", lineno, value_text,
			     width);
		if (is_mmio && address % (uint64_t)width)
			fail(EXIT_USAGE, "script line %" PRIu64 ": %s at 0x%" PRIx64 " is not aligned", lineno, command,
			     address);
		if (n == capacity) {
			capacity = capacity ? 2 * capacity : 1024;
			ops = realloc(ops, capacity * sizeof(*ops));
			if (!ops)
				fail(EXIT_RUNTIME, "--script: out of memory at line %" PRIu64, lineno);
		}
		/* a non-NULL placeholder marks MMIO until map_script_pages() sets the real pointer */
		ops[n++] = (struct script_op){ address, value, is_mmio ? (volatile uint8_t *)1 : NULL, (uint8_t)width,
					       (uint8_t)is_read };
	}
	if (ferror(in))
		fail(EXIT_RUNTIME, "--script %s: read error", path);
	if (in != stdin)
		fclose(in);
	if (n == 0)
		fail(EXIT_USAGE, "--script %s: no I/O command", path);
	*count = n;
	return ops;
}

/*
 * Whether the page at `page` is RAM the kernel uses (/proc/iomem's "System
 * RAM"): a reproducer's memory writes (the scratch memory's fills) must land
 * in memory reserved with memmap=, never in the kernel's own RAM, even on a
 * kernel without STRICT_DEVMEM.
 */
static int page_is_system_ram(uint64_t page)
{
	FILE *f = fopen("/proc/iomem", "r");
	char line[256];
	int found = 0;

	if (!f)
		fail(EXIT_RUNTIME, "--script: cannot read /proc/iomem (%s): refusing MMIO writes", strerror(errno));
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long long start, end;

		if (sscanf(line, " %llx-%llx", &start, &end) == 2 && strstr(line, ": System RAM") && start <= page &&
		    page <= end)
			found = 1;
	}
	fclose(f);
	return found;
}

/* Map each page an MMIO op touches (through its BAR's sysfs file, or /dev/mem), once per page. */
static void map_script_pages(struct script_op *ops, uint64_t n)
{
	struct page_map {
		uint64_t page;
		volatile uint8_t *base;
	} *pages = NULL;
	uint64_t n_pages = 0;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t page = ops[i].address & ~(PAGE_SIZE_BYTES - 1), k;

		if (!ops[i].mmio)
			continue;
		for (k = 0; k < n_pages && pages[k].page != page; k++)
			;
		if (k == n_pages) {
			struct range r = { .index = 0, .start = ops[i].address, .end = ops[i].address + ops[i].width - 1,
					   .space = SPACE_MMIO };
			char why[700];

			if (page_is_system_ram(page))
				fail(EXIT_DENIED, "--script: MMIO at 0x%" PRIx64 " is the kernel's RAM (System RAM in /proc/iomem)",
				     ops[i].address);
			if (setup_mmio(&r, why, sizeof(why)) < 0)
				fail(EXIT_DENIED, "--script: MMIO at 0x%" PRIx64 ": %s", ops[i].address, why);
			pages = realloc(pages, (n_pages + 1) * sizeof(*pages));
			if (!pages)
				fail(EXIT_RUNTIME, "--script: out of memory mapping pages");
			/* the mapping starts at the page (BAR files start on a page), whatever r.start was */
			pages[n_pages++] = (struct page_map){ page, r.mmio - (ops[i].address - page) };
		}
		ops[i].mmio = pages[k].base + (ops[i].address - page);
	}
	free(pages);
}

static int run_script(const char *path, int dry_run, uint64_t report_every)
{
	uint64_t n, done = 0;
	struct script_op *ops = read_script(path, &n);

	if (!dry_run) {
		if (!cmdline_has_marker())
			fail(EXIT_RUNTIME, "/proc/cmdline lacks %s: not an iofuzz guest, refusing real port I/O",
			     GUEST_MARKER);
		if (syscall(SYS_iopl, 3) < 0)
			fail(is_refusal(errno) ? EXIT_DENIED : EXIT_RUNTIME, "iopl(3) failed: %s", strerror(errno));
		map_script_pages(ops, n);
	}
	emit("@IOFUZZ READY %d 1", PROTOCOL_VERSION);
	emit("@P 0 0");
	while (done < n) {
		uint64_t stop = (done / report_every + 1) * report_every;

		if (stop > n)
			stop = n;
		for (; done < stop; done++) {
			const struct script_op *op = &ops[done];

			if (dry_run)
				printf("0 %" PRIu64 " %c 0x%" PRIx64 " %u 0x%" PRIx64 "\n", done, op->is_read ? 'r' : 'w',
				       op->address, op->width, op->is_read ? 0 : op->value);
			else if (op->mmio && op->is_read)
				mmio_read(op->mmio, op->width);
			else if (op->mmio)
				mmio_write(op->mmio, op->width, op->value);
			else if (op->is_read)
				port_read((uint16_t)op->address, op->width);
			else
				port_write((uint16_t)op->address, op->width, (uint32_t)op->value);
		}
		emit("@P 0 %" PRIu64, done);
	}
	emit("@DONE %" PRIu64, n);
	free(ops);
	return 0;
}

/* ---- main ------------------------------------------------------------ */

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "dry-run", no_argument, NULL, 'd' },	       { "limit-loop", no_argument, NULL, 'l' },
		{ "bare-loop", no_argument, NULL, 'b' },       { "check", no_argument, NULL, 'c' },
		{ "ranges-stdin", no_argument, NULL, 'R' },
		{ "seed", required_argument, NULL, 's' },      { "fuzz-count", required_argument, NULL, 'f' },
		{ "report-every", required_argument, NULL, 'k' }, { "resume", required_argument, NULL, 'r' },
		{ "hang-at", required_argument, NULL, 'H' },   { "help", no_argument, NULL, 'h' },
		{ "script", required_argument, NULL, 'S' },    { "scratch", required_argument, NULL, 'M' },
		{ "no-pci-restore", no_argument, NULL, 'N' }, { "pci-saved", required_argument, NULL, 'V' },
		{ "readback", no_argument, NULL, 'B' },
		{ NULL, 0, NULL, 0 },
	};
	static struct range ranges[MAX_RANGES];
	const char *script = NULL;
	char **range_args;
	int dry_run = 0, check = 0, ranges_stdin = 0, limit_loop = 0, bare_loop = 0, have_seed = 0, have_fuzz = 0, n_ranges, opt;
	int any_dma = 0;
	uint64_t seed = 0, fuzz_count = 0, report_every = DEFAULT_REPORT_EVERY, total = 0;
	struct position resume = { 0 }, hang = { 0 };
	struct range *first_range, *hang_range = NULL;

	out_is_tty = isatty(STDOUT_FILENO);
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'd': dry_run = 1; break;
		case 'l': limit_loop = 1; break;
		case 'b': bare_loop = 1; break;
		case 'c': check = 1; break;
		case 'R': ranges_stdin = 1; break;
		case 's': seed = parse_number("--seed", optarg, UINT64_MAX); have_seed = 1; break;
		case 'f': fuzz_count = parse_number("--fuzz-count", optarg, MAX_FUZZ_COUNT); have_fuzz = 1; break;
		case 'k': report_every = parse_number("--report-every", optarg, MAX_REPORT_EVERY); break;
		case 'r': parse_position("--resume", optarg, &resume); break;
		case 'H': parse_position("--hang-at", optarg, &hang); break;
		case 'h': usage(); return 0;
		case 'S': script = optarg; break;
		case 'M': parse_scratch(optarg); break;
		case 'N': pci_restore = 0; break;
		case 'V': parse_pci_saved(optarg); break;
		case 'B': readback = 1; break;
		default: fail(EXIT_USAGE, "unknown option or missing value: '%s'", argv[optind - 1]);
		}
	}
	if (script) {
		if (have_seed || have_fuzz || limit_loop || bare_loop || check || ranges_stdin || resume.set ||
		    hang.set || scratch_size || !pci_restore || pci_given_set || readback || optind < argc)
			fail(EXIT_USAGE, "--script combines only with --dry-run and --report-every");
		if (report_every == 0)
			fail(EXIT_USAGE, "--report-every must be at least 1");
		return run_script(script, dry_run, report_every);
	}
	if (!have_seed || !have_fuzz)
		fail(EXIT_USAGE, "--seed and --fuzz-count are required");
	if (bare_loop && (limit_loop || dry_run))
		fail(EXIT_USAGE, "--bare-loop combines with neither --limit-loop nor --dry-run");
	if (check && (dry_run || limit_loop || bare_loop))
		fail(EXIT_USAGE, "--check combines with none of --dry-run, --limit-loop, --bare-loop");
	if (report_every == 0)
		fail(EXIT_USAGE, "--report-every must be at least 1");
	if (readback && (limit_loop || bare_loop))
		fail(EXIT_USAGE, "--readback combines with neither --limit-loop nor --bare-loop (they print no lines)");
	if (ranges_stdin) {
		if (optind < argc)
			fail(EXIT_USAGE, "--ranges-stdin: ranges come from stdin, not also from the command line");
		range_args = read_range_words(&n_ranges);
	} else {
		range_args = argv + optind;
		n_ranges = argc - optind;
	}
	if (n_ranges < 1)
		fail(EXIT_USAGE, "no range given (expected [I:]0xSTART-0xEND[/W]...)");
	if (n_ranges > MAX_RANGES)
		fail(EXIT_USAGE, "%d ranges given, at most %d supported", n_ranges, MAX_RANGES);
	for (int i = 0; i < n_ranges; i++) {
		parse_range(range_args[i], (uint64_t)i, seed, fuzz_count, &ranges[i]);
		for (int j = 0; j < i; j++)
			if (ranges[j].index == ranges[i].index)
				fail(EXIT_USAGE, "range index %" PRIu64 " given twice", ranges[i].index);
		if (bare_loop && ranges[i].space != SPACE_PIO)
			fail(EXIT_USAGE, "--bare-loop replays port I/O only, range '%s' is %s", range_args[i],
			     space_names[ranges[i].space]);
		any_dma |= ranges[i].dma;
	}
	if (pci_given_set && !pci_restore)
		fail(EXIT_USAGE, "--pci-saved is for putting a header back: not with --no-pci-restore");
	if (any_dma && !scratch_size)
		fail(EXIT_USAGE, "+dma ranges need --scratch 0xBASE-0xEND (their scratch memory)");
	for (int i = 0; i < n_ranges; i++)
		if (ranges[i].layout != LAYOUT_GENERIC && scratch_size != LAYOUT_SIZE)
			fail(EXIT_USAGE, "range '%s': the %s layout is drawn for a scratch memory of 0x%llx bytes, not 0x%" PRIx64,
			     range_args[i], layout_names[ranges[i].layout], LAYOUT_SIZE, scratch_size);
	if (any_dma && bare_loop)
		fail(EXIT_USAGE, "--bare-loop replays a table of ops without the scratch memory: no +dma range");

	first_range = ranges;
	if (resume.set) {
		first_range = find_range(ranges, n_ranges, "--resume", &resume);
		if (resume.op_index > first_range->op_count)
			fail(EXIT_USAGE, "--resume: range %" PRIu64 " has only %" PRIu64 " ops", resume.range_index,
			     first_range->op_count);
	}
	if (hang.set) {
		if (limit_loop || bare_loop)
			fail(EXIT_USAGE, "--hang-at does not combine with --limit-loop or --bare-loop");
		hang_range = find_range(ranges, n_ranges, "--hang-at", &hang);
		if (hang.op_index >= hang_range->op_count)
			fail(EXIT_USAGE, "--hang-at: range %" PRIu64 " has only %" PRIu64 " ops", hang.range_index,
			     hang_range->op_count);
		if (hang_range < first_range ||
		    (resume.set && hang_range == first_range && hang.op_index < resume.op_index))
			fail(EXIT_USAGE, "--hang-at is before the resume point: it would never be reached");
	}

	if (!dry_run) {
		int refused;

		/* the marker check comes before any access path is even set up */
		if (!cmdline_has_marker())
			fail(EXIT_RUNTIME, "/proc/cmdline lacks %s: not an iofuzz guest, refusing real port I/O",
			     GUEST_MARKER);
		refused = setup_access(ranges, n_ranges);
		if (any_dma) {
			char why[300];

			if (setup_scratch(why, sizeof(why)) < 0) {
				if (!check)
					fail(EXIT_DENIED, "scratch memory of the +dma ranges: %s", why);
				emit("@NOSCRATCH %s", why);
			}
			for (int i = 0; i < n_ranges && !check && !refused; i++)
				if (ranges[i].dma)
					enable_bus_master(&ranges[i]);
		}
		if (check) {
			emit("@DONE 0");
			return 0;
		}
		if (refused)
			fail(EXIT_DENIED, "raw access denied by the guest kernel for %d range(s)", refused);
	} else {
		static char buffer[1 << 16];

		setvbuf(stdout, buffer, _IOFBF, sizeof(buffer));
		if (any_dma && !(scratch_words = calloc(scratch_size / 8, 8)))
			fail(EXIT_RUNTIME, "out of memory for the scratch memory's copy");
	}

	if (limit_loop || bare_loop) {
		for (struct range *r = first_range; r < ranges + n_ranges; r++) {
			uint64_t first = (r == first_range && resume.set) ? resume.op_index : 0;

			if (bare_loop) {
				run_bare(r, first, r->op_count);
			} else {
				if (!dry_run)
					enter_pci_range(r, first);
				run_paced(r, first, r->op_count, first, 0, dry_run ? run_sink : run_range);
				pci_position = r->op_count;
				leave_pci_range(1);
			}
			total += r->op_count - first;
		}
		emit("@DONE %" PRIu64, total);
		return 0;
	}

	emit("@IOFUZZ READY %d %d", PROTOCOL_VERSION, n_ranges);
	for (struct range *r = first_range; r < ranges + n_ranges; r++) {
		uint64_t j = (r == first_range && resume.set) ? resume.op_index : 0;
		uint64_t entered = j;

		emit("@P %" PRIu64 " %" PRIu64, r->index, j);
		rb_count = 0;
		if (!dry_run)
			enter_pci_range(r, j);
		for (;;) {
			int clamped = 0;
			uint64_t stop;

			if (r == hang_range && j == hang.op_index)
				hang_forever(dry_run, r->index, j);
			if (j >= r->op_count)
				break;
			/* report at multiples of K: windows do not depend on the resume point */
			stop = (j / report_every + 1) * report_every;
			if (stop > r->op_count)
				stop = r->op_count;
			if (r == hang_range && hang.op_index > j && hang.op_index < stop) {
				stop = hang.op_index;
				clamped = 1;
			}
			run_paced(r, j, stop, entered, dry_run,
				  dry_run ? run_print : readback ? run_range_read_back : run_range);
			total += stop - j;
			j = stop;
			if (!clamped)
				emit("@P %" PRIu64 " %" PRIu64, r->index, j);
		}
		pci_position = j;
		if (readback && !dry_run)
			report_read_back(r); /* before the header restore: the reads see what the ops left */
		leave_pci_range(1);
	}
	emit("@DONE %" PRIu64, total);
	return 0;
}

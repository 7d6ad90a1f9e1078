# The accelerator probe's guest: the last 512 bytes of a 64 KiB "BIOS" image.
#
# Why not just a real-mode "out; hlt"? On hosts with broken nested
# virtualisation such a guest runs fine under KVM, while Linux hangs as soon as
# it writes memory in long mode with paging on (seen stuck in the `rep stosb`
# that clears .bss). So the probe does what Linux does first: enter protected
# mode, build identity page tables with 2 MiB pages, enable long mode, write
# 6 MiB of RAM with `rep stosb`, and only then tell isa-debug-exit (port 0xf4)
# to end QEMU with status (0x21 << 1) | 1 = 67.
#
# The bytes are embedded in accel.py (PROBE_CODE, RESET_JUMP); a unit test
# reassembles this file when binutils are present and compares. To rebuild:
#   as -o probe.o kvm_probe.S && objcopy -O binary -j .text probe.o probe.raw

        .set BASE, 0xFFFFFE00           # linear address of this 512-byte block (end of the BIOS ROM)
        .set CSOFF, 0xFE00              # its offset in the reset code segment (base 0xFFFF0000)
        .text
        .code16
start16:
        cli
        lgdtl %cs:(CSOFF + gdtr - start16)
        movl %cr0, %eax
        orl $1, %eax                    # CR0.PE
        movl %eax, %cr0
        ljmpl $0x08, $(BASE + start32 - start16)
        .code32
start32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movl $0x1000, %edi              # clear 16 KiB of page tables at 0x1000
        xorl %eax, %eax
        movl $0x1000, %ecx
        rep stosl
        movl $0x2003, 0x1000            # PML4[0] -> PDPT at 0x2000
        movl $0x3003, 0x2000            # PDPT[0] -> PD at 0x3000 (first GiB)
        movl $0x4003, 0x2018            # PDPT[3] -> PD at 0x4000 (fourth GiB)
        movl $0x00000083, 0x3000        # 0-8 MiB identity, 2 MiB pages
        movl $0x00200083, 0x3008
        movl $0x00400083, 0x3010
        movl $0x00600083, 0x3018
        movl $0xFFE00083, 0x4FF8        # the top 2 MiB, where this code runs
        movl %cr4, %eax
        orl $0x20, %eax                 # CR4.PAE
        movl %eax, %cr4
        movl $0x1000, %eax
        movl %eax, %cr3
        movl $0xC0000080, %ecx          # EFER.LME
        rdmsr
        orl $0x100, %eax
        wrmsr
        movl %cr0, %eax
        orl $0x80000000, %eax           # CR0.PG: long mode is active
        movl %eax, %cr0
        ljmp $0x18, $(BASE + start64 - start16)
        .code64
start64:
        movl $0x200000, %edi            # write 6 MiB of fresh RAM through the page tables
        movl $0x600000, %ecx
        movb $0xa5, %al
        rep stosb
        movb $0x21, %al                 # isa-debug-exit: QEMU exits with status 67
        outb %al, $0xf4
1:      hlt
        jmp 1b
        .balign 8
gdt:
        .quad 0
        .quad 0x00CF9A000000FFFF        # 0x08: flat 32-bit code
        .quad 0x00CF92000000FFFF        # 0x10: flat data
        .quad 0x00AF9A000000FFFF        # 0x18: 64-bit code
gdtr:
        .word gdtr - gdt - 1
        .long BASE + gdt - start16
        .org 0x1F0                      # the reset vector, 0xFFFFFFF0
        .code16
        jmp start16
        .org 0x200, 0xF4

/* Minimal Cortex-M4 start-up: vector table, .data copy, .bss clear, FPU on, C++ static constructors
 * (.init_array, empty in C firmware), main(). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern void (*const __init_array_start[])(void), (*const __init_array_end[])(void);
int main(void);

void Reset_Handler(void);
void Default_Handler(void);

void Default_Handler(void) {
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) void (*const g_vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler,
    Default_Handler,
};

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: CP10/CP11 full access (FPU) */
    __asm volatile("dsb\n isb");
    for (void (*const *ctor)(void) = __init_array_start; ctor < __init_array_end; ++ctor) (*ctor)();
    main();
    for (;;) {
    }
}

// TFLite Micro behind the edgekd firmware's model interface (edgekd_model.h): the protocol code
// (ee_main.c) is the same as in the C-backend firmware; only the model changes.
#include "edgekd_model.h"
#include "model_data.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {
alignas(16) uint8_t g_arena[EDGEKD_ARENA_SIZE];
tflite::MicroInterpreter* g_interpreter = nullptr;

tflite::MicroInterpreter* Interpreter() {
  if (g_interpreter == nullptr) {
    static ModelOpResolver resolver;
    RegisterOps(resolver);
    static tflite::MicroInterpreter interpreter(tflite::GetModel(g_model), resolver, g_arena,
                                                EDGEKD_ARENA_SIZE);
    if (interpreter.AllocateTensors() != kTfLiteOk) {
      return nullptr;  // arena too small: raise EDGEKD_ARENA_SIZE in edgekd_model.h
    }
    g_interpreter = &interpreter;
  }
  return g_interpreter;
}
}  // namespace

#ifdef EE_BOOT_REPORT
void ReportStackOnce();
#endif

extern "C" int8_t* edgekd_input(void) { return Interpreter()->input(0)->data.int8; }
extern "C" const int8_t* edgekd_output(void) { return Interpreter()->output(0)->data.int8; }
extern "C" void edgekd_invoke(void) {
  Interpreter()->Invoke();
#ifdef EE_BOOT_REPORT
  ReportStackOnce();
#endif
}

#ifdef EE_BOOT_REPORT
// Diagnostics for the emulated board (ee_main.c calls edgekd_boot_report() before its banner when built
// with -DEE_BOOT_REPORT), as prefix-less lines the host runner skips: at boot, the arena TFLite Micro
// used on this 32-bit target; after the first inference, the stack's high-water mark from its top,
// measured by painting the free stack at boot (boot, AllocateTensors, the protocol, one Invoke).
extern "C" {
#include "board.h"
extern uint32_t _ebss, _estack;  // the linker script's end of .bss and top of the stack
}

namespace {
constexpr uint32_t kStackPaint = 0x5AA5C33Cu;
constexpr uint32_t kPaintWords = 32 * 1024;  // 128 KiB below the boot report's frame
volatile uint32_t* g_paint_low = nullptr;
bool g_stack_reported = false;

void PutText(const char* s) {
  while (*s) board_putc(*s++);
}

void PutNumber(uint32_t v) {
  char digits[11];
  int i = 10;
  digits[i] = 0;
  do {
    digits[--i] = static_cast<char>('0' + v % 10u);
    v /= 10u;
  } while (v);
  PutText(digits + i);
}

__attribute__((noinline)) void PaintFreeStack() {
  uint32_t sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  volatile uint32_t* top = reinterpret_cast<volatile uint32_t*>(sp & ~3u);
  volatile uint32_t* low = top - kPaintWords;
  if (low < &_ebss) low = &_ebss;
  for (volatile uint32_t* p = low; p < top; ++p) *p = kStackPaint;
  g_paint_low = low;
}

uint32_t StackPeak() {
  volatile uint32_t* p = g_paint_low;
  while (*p == kStackPaint) ++p;
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(&_estack) - reinterpret_cast<uintptr_t>(p));
}
}  // namespace

void ReportStackOnce() {
  if (g_stack_reported || g_paint_low == nullptr) return;
  g_stack_reported = true;
  PutText("edgekd-tflm: stack_bytes=");
  PutNumber(StackPeak());
  PutText("\r\n");
}

extern "C" void edgekd_boot_report(void) {
  PaintFreeStack();
  if (Interpreter() == nullptr) {
    PutText("edgekd-tflm: AllocateTensors failed (the lines above say why); halted\r\n");
    for (;;) {
    }
  }
  PutText("edgekd-tflm: arena_used_bytes=");
  PutNumber(static_cast<uint32_t>(g_interpreter->arena_used_bytes()));
  PutText(" arena_bytes=");
  PutNumber(EDGEKD_ARENA_SIZE);
  PutText("\r\n");
}
#endif  // EE_BOOT_REPORT

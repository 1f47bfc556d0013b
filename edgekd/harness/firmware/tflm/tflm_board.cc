// TFLite Micro's platform hooks on the edgekd board interface (board.h): DebugLog (TFLite Micro's
// error messages as prefix-less lines on the UART, which the host runner skips) and micro_time.
// Used instead of the tree's cortex_m_generic/debug_log.cc and micro_time.cc.
#include <cstdarg>
#include <cstdio>

#include "tensorflow/lite/micro/debug_log.h"
#include "tensorflow/lite/micro/micro_time.h"

extern "C" {
#include "board.h"
}

extern "C" void DebugLog(const char* format, va_list args) {
  char text[256];
  vsnprintf(text, sizeof text, format, args);
  for (const char* s = text; *s; ++s) {
    if (*s == '\n') board_putc('\r');
    board_putc(*s);
  }
}

extern "C" int DebugVsnprintf(char* buffer, size_t buf_size, const char* format, va_list vlist) {
  return vsnprintf(buffer, buf_size, format, vlist);
}

// the C++ ABI's handle for static destructors (crtbegin.o's, which -nostartfiles leaves out)
extern "C" {
void* __dso_handle = &__dso_handle;
}

namespace tflite {
uint32_t ticks_per_second() { return 1000000u; }
uint32_t GetCurrentTimeTicks() { return static_cast<uint32_t>(board_time_us()); }
}  // namespace tflite

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

extern "C" int8_t* edgekd_input(void) { return Interpreter()->input(0)->data.int8; }
extern "C" const int8_t* edgekd_output(void) { return Interpreter()->output(0)->data.int8; }
extern "C" void edgekd_invoke(void) { Interpreter()->Invoke(); }

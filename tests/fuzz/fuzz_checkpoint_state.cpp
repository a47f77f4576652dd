// Fuzzes the checkpoint's training-state reader (train/checkpoint.h,
// read_checkpoint_state). The input is the text of the "state" metadata
// value (the TrainState JSON); the target wraps it in a valid safetensors
// file with no tensors and the checkpoint's format tag, so every input gets
// past the safetensors layer to the state parser. Bytes that are not UTF-8
// become U+FFFD (safetensors metadata are UTF-8 JSON strings).
// Nothing is checked beyond the contract (a state or rz::Error).
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string state(reinterpret_cast<const char*>(data), size);
  const std::string value =
      nlohmann::json(state).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string header = R"({"__metadata__":{"format":"ranzcr-checkpoint-1","state":)" + value + "}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  file += header;
  const std::string path = rz::fuzz::write_scratch_file("checkpoint.safetensors", file);

  rz::fuzz::rejects_only([&] { (void)rz::read_checkpoint_state(path); });
  return 0;
}

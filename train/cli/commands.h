// Subcommands of the ranzcr CLI; each adds itself to the app. Errors thrown
// by the library reach main() and leave as one line and exit code 1.
#pragma once

#include <CLI/CLI.hpp>

namespace rz::cli {

void add_tiny_train(CLI::App& app);
void add_info(CLI::App& app);
void add_prep(CLI::App& app);
void add_train(CLI::App& app);
void add_synth(CLI::App& app);
void add_eval(CLI::App& app);
void add_predict(CLI::App& app);
void add_score(CLI::App& app);
void add_demo(CLI::App& app);
void add_bench(CLI::App& app);

// --max-image-pixels N: the decode budget (data/image.h set_max_image_pixels)
// for a command that decodes images.
void add_image_budget_option(CLI::App* cmd);

// True when stdout is a terminal (progress bars redraw one line then).

}  // namespace rz::cli

// The ranzcr command-line tool.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "engine/error.h"

int main(int argc, char** argv) {
  CLI::App app{"ranzcr: SE-ResNet teacher/student training for RANZCR CLiP"};
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}

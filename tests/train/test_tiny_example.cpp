#include <doctest/doctest.h>

#include "train/tiny_example.h"

TEST_CASE("tiny example: the main-job example learns and generalizes") {
  rz::TinyExampleOptions opt;
  opt.test_images = 256;  // the defaults otherwise: what `ranzcr tiny-train` runs
  int lines = 0;
  const auto r = rz::run_tiny_example(opt, [&](const std::string&) { ++lines; });
  CHECK(lines == opt.epochs);
  CHECK(r.first_train_loss > 0.6);  // about log 2 at the start
  CHECK(r.final_train_loss < 0.25);
  CHECK(r.test_accuracy > 0.9);     // chance is 0.5
  MESSAGE("tiny example: train BCE ", r.first_train_loss, " -> ", r.final_train_loss,
          ", held-out accuracy ", r.test_accuracy);
}

TEST_CASE("tiny example: bad options are refused") {
  rz::TinyExampleOptions opt;
  opt.batch = 4096;
  CHECK_THROWS_AS(rz::run_tiny_example(opt, [](const std::string&) {}), rz::Error);
}

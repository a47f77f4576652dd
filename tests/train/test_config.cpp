#include <doctest/doctest.h>

#include <filesystem>

#include "data/draw.h"
#include "engine/error.h"
#include "train/config.h"

using namespace rz;

TEST_CASE("config: TOML sections override the defaults") {
  const auto c = parse_config(R"(
[model]
name = "seresnet_tiny"
img_size = 128
[optim]
name = "adamw"
lr = 3e-4
[stage]
kind = "student-kd"
teacher = "runs/teacher/best.ckpt"
freeze = ["layer3", "fc"]
[train]
epochs = 3
)", "t.toml");
  CHECK(c.model.name == "seresnet_tiny");
  CHECK(c.model.img_size == 128);
  CHECK(c.optim.lr == doctest::Approx(3e-4));
  CHECK(c.stage.freeze == std::vector<std::string>{"layer3", "fc"});
  CHECK(c.train.epochs == 3);
  CHECK(c.train.batch == 16);  // default kept
  validate_config(c);
}

TEST_CASE("config: errors name the file, line, key and value") {
  CHECK_THROWS_WITH_AS(parse_config("[model]\nname = \"x\"\nimgsize = 3\n", "a.toml"),
                       doctest::Contains("a.toml:3: unknown configuration key 'model.imgsize'"), Error);
  CHECK_THROWS_WITH_AS(parse_config("[train]\nepochs = \"ten\"\n", "b.toml"),
                       doctest::Contains("b.toml:2: 'train.epochs' must be an integer, got 'ten'"),
                       Error);
  CHECK_THROWS_WITH_AS(parse_config("[train\nepochs = 1\n", "c.toml"), doctest::Contains("c.toml:1"),
                       Error);
  CHECK_THROWS_WITH_AS(load_config("/nonexistent/x.toml"), doctest::Contains("/nonexistent/x.toml"),
                       Error);
  TrainConfig c;
  c.optim.name = "lamb";
  CHECK_THROWS_WITH_AS(validate_config(c), doctest::Contains("optim.name = 'lamb'"), Error);
  c = TrainConfig{};
  c.stage.kind = "student-kd";
  CHECK_THROWS_WITH_AS(validate_config(c), doctest::Contains("needs stage.teacher"), Error);
}

// stage.annotation_style takes exactly the names the drawing code parses.
TEST_CASE("config: stage.annotation_style accepts every drawing style and names them when refused") {
  for (const char* name : rz::data::kAnnotationStyleNames) {
    TrainConfig c;
    c.stage.annotation_style = name;
    CAPTURE(name);
    CHECK_NOTHROW(validate_config(c));
    CHECK_NOTHROW(rz::data::parse_annotation_style(name));
  }
  TrainConfig c;
  c.stage.annotation_style = "colour";
  CHECK_THROWS_WITH_AS(
      validate_config(c),
      doctest::Contains("stage.annotation_style = 'colour' (expected one of seed, color, device)"),
      Error);
  CHECK_THROWS_WITH_AS(rz::data::parse_annotation_style("colour"),
                       doctest::Contains("expected seed, color or device"), Error);
}

TEST_CASE("config: dotted overrides parse by the key's type") {
  TrainConfig c;
  apply_override(c, "optim.lr=0.001");
  apply_override(c, "train.epochs=7");
  apply_override(c, "data.annotated_only=true");
  apply_override(c, "model.name=resnet200d");
  apply_override(c, "stage.freeze=conv1,bn1,layer1");
  apply_override(c, "run.name=\"with spaces\"");
  CHECK(c.optim.lr == doctest::Approx(0.001));
  CHECK(c.train.epochs == 7);
  CHECK(c.data.annotated_only);
  CHECK(c.model.name == "resnet200d");
  CHECK(c.stage.freeze == std::vector<std::string>{"conv1", "bn1", "layer1"});
  CHECK(c.run.name == "with spaces");
  apply_override(c, "optim.lr=2");  // an integer where a number is expected is fine
  CHECK(c.optim.lr == 2.0);
  CHECK_THROWS_WITH_AS(apply_override(c, "optim.learning_rate=1"), doctest::Contains("unknown"), Error);
  CHECK_THROWS_WITH_AS(apply_override(c, "train.epochs=1.5"), doctest::Contains("must be an integer"),
                       Error);
  CHECK_THROWS_WITH_AS(apply_override(c, "train.epochs"), doctest::Contains("section.key=value"), Error);
}

TEST_CASE("config: the saved TOML reads back to the same configuration") {
  TrainConfig c;
  apply_override(c, "stage.freeze=layer3,fc");
  apply_override(c, "optim.lr=0.000123");
  apply_override(c, "run.seed=42");
  const std::string text = config_to_toml(c);
  CHECK(text.find("[optim]") != std::string::npos);
  const TrainConfig back = parse_config(text, "saved.toml");
  CHECK(config_to_toml(back) == text);
  CHECK(back.optim.lr == c.optim.lr);
  CHECK(back.stage.freeze == c.stage.freeze);
  CHECK(config_keys_help().find("optim.lr") != std::string::npos);
}

TEST_CASE("config: every shipped configs/*.toml parses and validates") {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(RZ_SOURCE_DIR) + "/configs")) {
    if (e.path().extension() != ".toml") continue;
    CAPTURE(e.path().string());
    const TrainConfig c = load_config(e.path().string());
    CHECK_NOTHROW(validate_config(c));
    ++n;
  }
  CHECK(n >= 11);
}

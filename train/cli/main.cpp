// The ranzcr command-line tool. Errors from the library arrive as rz::Error
// and leave as one line on stderr and exit code 1.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <new>
#include <omp.h>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/comm.h"
#include "train/cli/commands.h"
#include "engine/atomic_file.h"
#include "train/config.h"
#include "train/info.h"
#include "train/roofline.h"
#include "train/roofline_join.h"
#include "train/tiny_example.h"

namespace rz::cli {

void add_tiny_train(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "tiny-train", "Train a small SE conv net on synthetic shapes and report held-out accuracy");
  auto opt = std::make_shared<rz::TinyExampleOptions>();
  auto device = std::make_shared<std::string>("cpu");
  auto threads = std::make_shared<int>(0);
  cmd->add_option("--epochs", opt->epochs, "Training epochs")->check(CLI::PositiveNumber);
  cmd->add_option("--train-images", opt->train_images, "Training images")->check(CLI::PositiveNumber);
  cmd->add_option("--test-images", opt->test_images, "Held-out images")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", opt->batch, "Batch size")->check(CLI::Range(2, 4096));
  cmd->add_option("--lr", opt->lr, "Peak learning rate (AdamW, warmup + cosine)")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", opt->seed, "Random seed (data and init)");
  cmd->add_option("--device", *device, "cpu (this example runs on the CPU backend)");
  cmd->add_option("--threads", *threads, "CPU threads (0: all cores)")->check(CLI::NonNegativeNumber);
  cmd->callback([opt, device, threads] {
    if (*threads > 0) omp_set_num_threads(*threads);
    opt->device = rz::parse_device(*device);
    std::printf("tiny-train: %lld train / %lld held-out images, %lldx%lld, batch %lld, %d threads\n",
                static_cast<long long>(opt->train_images), static_cast<long long>(opt->test_images),
                static_cast<long long>(opt->image_size), static_cast<long long>(opt->image_size),
                static_cast<long long>(opt->batch), omp_get_max_threads());
    const auto r = rz::run_tiny_example(*opt, [](const std::string& line) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    });
    std::printf("done in %.1f s: train BCE %.4f -> %.4f, held-out accuracy %.1f%% (chance 50%%)\n",
                r.seconds, r.first_train_loss, r.final_train_loss, 100.0 * r.test_accuracy);
  });
}

struct RooflineCli {
  bool on = false, tf32 = false, ema = false, clip = false, fused = false, per_op = false;
  std::string gpu, config, precision, optimizer, json;
  std::vector<std::string> measured;
};

void add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Parameters, MACs and activation memory of a model");
  auto opt = std::make_shared<rz::InfoOptions>();
  cmd->add_option("--model", opt->model, "Model name (seresnet152d, resnet50d, seresnet_tiny, ...)");
  cmd->add_option("--img-size", opt->image_size, "Square input size in pixels")->check(CLI::Range(32, 8192));
  cmd->add_option("--num-classes", opt->num_classes, "Classifier outputs")->check(CLI::PositiveNumber);
  cmd->add_option("--in-chans", opt->in_chans, "Input channels (1 or 3)")->check(CLI::Range(1, 3));
  cmd->add_option("--batch", opt->batch, "Batch size for the activation-memory estimate")->check(CLI::PositiveNumber);
  cmd->add_option("--activation-bytes", opt->activation_bytes, "2 (bf16) or 4 (fp32)");
  auto roof = std::make_shared<RooflineCli>();
  cmd->add_flag("--roofline", roof->on,
                "Per-op FLOPs, bytes and lower-bound time of one training step on --gpu");
  cmd->add_option("--gpu", roof->gpu, "h100-sxm, h200, a100 (bench/gpus/) or a TOML file with the same fields")
      ->default_val("h100-sxm");
  cmd->add_option("--config", roof->config,
                  "Take the model, size, batch, precision, fused ops and optimizer from a training config");
  cmd->add_option("--precision", roof->precision, "bf16 (mixed) or fp32")
      ->check(CLI::IsMember({"bf16", "fp32"}))
      ->default_val("bf16");
  cmd->add_flag("--tf32", roof->tf32, "fp32 convolutions and GEMMs on TF32 tensor cores");
  cmd->add_option("--optimizer", roof->optimizer, "adamw, adam or sgd")
      ->check(CLI::IsMember({"adamw", "adam", "sgd"}))
      ->default_val("adamw");
  cmd->add_flag("--ema", roof->ema, "Count an EMA update per step");
  cmd->add_flag("--clip-grad", roof->clip, "Count gradient-norm clipping");
  cmd->add_flag("--fused", roof->fused, "model.fused_se, fused_bn and fused_conv_bn on");
  cmd->add_flag("--per-op", roof->per_op, "List every op, not only the totals per kernel class");
  cmd->add_option("--json", roof->json, "Also write every op and the totals as JSON to this file");
  cmd->add_option("--measured", roof->measured,
                  "Bench outputs (train_step_bench JSON, ops_gpu_bench table or JSON lines, conv_bench table) "
                  "to join with the model: % of roofline per kernel class")
      ->check(CLI::ExistingFile);
  cmd->callback([opt, roof, cmd] {
    if (!roof->on) {
      std::fputs(rz::model_info_report(*opt).c_str(), stdout);
      return;
    }
    if (!roof->measured.empty()) {
      const auto joined = rz::roofline_join(roof->measured, cmd->count("--gpu") > 0 ? roof->gpu : "");
      std::fputs(rz::join_table(joined).c_str(), stdout);
      return;
    }
    rz::RooflineOptions ro;
    if (!roof->config.empty()) {
      for (const char* flag : {"--model", "--img-size", "--batch", "--num-classes", "--in-chans", "--precision",
                               "--optimizer", "--tf32", "--ema", "--clip-grad", "--fused"})
        if (cmd->count(flag) > 0)
          throw CLI::ValidationError(flag, "comes from --config " + roof->config + "; edit the config instead");
      ro = rz::roofline_options(rz::load_config(roof->config));
    } else {
      ro.model = rz::resnet_config(opt->model);
      ro.model.num_classes = opt->num_classes;
      ro.model.in_chans = opt->in_chans;
      ro.model.fused_se = ro.model.fused_bn = ro.model.fused_conv_bn = roof->fused;
      ro.image_size = opt->image_size;
      ro.batch = opt->batch;
      ro.bf16 = roof->precision == "bf16";
      ro.allow_tf32 = roof->tf32;
      ro.optimizer = roof->optimizer;
      ro.ema = roof->ema;
      ro.clip_grad = roof->clip;
    }
    const rz::Roofline r = rz::roofline(ro, rz::gpu_peaks(roof->gpu));
    std::fputs(rz::roofline_table(r, roof->per_op).c_str(), stdout);
    if (!roof->json.empty()) {
      rz::write_file_atomic(roof->json, rz::roofline_json(r).dump(1) + "\n");
      std::printf("wrote %s\n", roof->json.c_str());
    }
  });
}

}  // namespace rz::cli

namespace {
// " (rank R of W)" in a data-parallel launch, else "".
std::string rank_tag() {
  try {
    const rz::DistEnv env = rz::detect_dist_env();
    if (env.world_size > 1) return " (rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) + ")";
  } catch (...) {
  }
  return "";
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ranzcr: SE-ResNet teacher/student training for RANZCR CLiP"};
  app.require_subcommand(1);
  rz::cli::add_demo(app);
  rz::cli::add_synth(app);
  rz::cli::add_prep(app);
  rz::cli::add_train(app);
  rz::cli::add_eval(app);
  rz::cli::add_predict(app);
  rz::cli::add_score(app);
  rz::cli::add_info(app);
  rz::cli::add_bench(app);
  rz::cli::add_tiny_train(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const rz::Error& e) {
    std::fprintf(stderr, "ranzcr: error%s: %s\n", rank_tag().c_str(), e.what());
    std::fflush(stderr);
    rz::abort_job(1);  // the other ranks end too, never wait on this one
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "ranzcr: error: out of host memory; lower the batch size (train.batch), the "
                 "image size (model.img_size) or the loader workers (data.workers)\n");
    rz::abort_job(1);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ranzcr: error%s: %s\n", rank_tag().c_str(), e.what());
    std::fflush(stderr);
    rz::abort_job(1);
    return 1;
  }
  return 0;
}

// `ranzcr train`.
#include <cstdio>

#include "train/cli/commands.h"
#include "train/config.h"
#include "train/demo.h"
#include "train/trainer.h"

namespace rz::cli {
namespace {

// The run's one-line summary; in data-parallel training rank 0 alone prints it.
void print_summary(const TrainResult& r) {
  if (r.rank != 0) return;
  std::printf("best mean AUC %.4f at epoch %lld -> %s\n", r.best_mean_auc, static_cast<long long>(r.best_epoch),
              r.run_dir.c_str());
}

}  // namespace

void add_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train one stage (teacher, student-kd, student-transfer, finetune)");
  auto config = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto stage = std::make_shared<std::string>();
  auto pretrained = std::make_shared<std::string>();
  auto resume_dir = std::make_shared<std::string>();
  auto help_config = std::make_shared<bool>(false);
  auto device = std::make_shared<std::string>();
  auto precision = std::make_shared<std::string>();
  auto conv_impl = std::make_shared<std::string>();
  cmd->add_option("--config", *config, "TOML configuration (configs/*.toml)");
  cmd->add_option("--conv-impl", *conv_impl, "CUDA convolutions: cudnn, native or auto (run.conv_impl)")
      ->check(CLI::IsMember({"cudnn", "native", "auto"}));
  cmd->add_option("--device", *device, "cpu, cuda, cuda:N or auto (shorthand for run.device)");
  cmd->add_option("--precision", *precision, "fp32 or bf16 (CUDA; shorthand for run.precision)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--set", *sets, "override a key: --set optim.lr=3e-4 (repeatable)");
  cmd->add_option("--stage", *stage, "shorthand for --set stage.kind=...")
      ->check(CLI::IsMember({"teacher", "student-kd", "student-transfer", "finetune"}));
  cmd->add_option("--pretrained", *pretrained, "timm safetensors weights (shorthand for model.pretrained)");
  cmd->add_option("--resume", *resume_dir, "continue the run in this folder from its last.ckpt");
  auto allow_change = std::make_shared<bool>(false);
  cmd->add_flag("--allow-config-change", *allow_change,
                "with --resume: continue although config.toml differs from the checkpoint's "
                "configuration in keys that change the result");
  cmd->add_flag("--help-config", *help_config, "list every configuration key");
  cmd->callback([=] {
    if (*help_config) {
      std::printf("configuration keys (TOML sections; override with --set section.key=value):\n%s",
                  config_keys_help().c_str());
      return;
    }
    TrainHooks hooks;
    hooks.progress = ProgressLine::auto_mode();
    if (*allow_change && resume_dir->empty())
      throw CLI::ValidationError("--allow-config-change", "only applies with --resume");
    hooks.allow_config_change = *allow_change;
    if (!resume_dir->empty()) {
      if (!config->empty() || !sets->empty() || !stage->empty() || !precision->empty() ||
          !conv_impl->empty())
        throw CLI::ValidationError("--resume", "continues with the run's saved config.toml; "
                                               "--config/--set/--stage/--precision cannot be combined with it");
      print_summary(resume(*resume_dir, hooks));
      return;
    }
    TrainConfig cfg = config->empty() ? TrainConfig{} : load_config(*config);
    if (!stage->empty()) apply_override(cfg, "stage.kind=" + *stage);
    if (!pretrained->empty()) cfg.model.pretrained = *pretrained;
    if (!device->empty()) cfg.run.device = *device;
    if (!precision->empty()) cfg.run.precision = *precision;
    if (!conv_impl->empty()) cfg.run.conv_impl = *conv_impl;
    for (const auto& s : *sets) apply_override(cfg, s);
    print_summary(train(cfg, hooks));
  });
}

void add_demo(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "demo", "Synthetic data -> teacher -> distilled and control students -> fine-tune -> AUC table");
  auto o = std::make_shared<DemoOptions>();
  cmd->add_option("--out", o->out_dir, "demo folder (data, cache, runs); reruns continue in it");
  cmd->add_option("--seed", o->seed, "seed");
  cmd->add_flag("--full", o->full, "seresnet152d at 512 px on 3000 studies (for a GPU)");
  cmd->add_option("--n", o->n_images, "synthetic training studies (0: preset)");
  cmd->add_option("--epochs", o->epochs, "epochs per student stage, half for the fine-tune (0: preset)");
  cmd->add_option("--teacher-epochs", o->teacher_epochs, "teacher epochs (0: preset)");
  cmd->add_option("--threads", o->threads, "CPU threads (0: all cores)");
  cmd->add_option("--difficulty", o->difficulty, "synthetic tube faintness 0..1");
  cmd->add_option("--img-size", o->img_size, "model input size (0: preset)");
  cmd->add_option("--tube-width", o->tube_width, "synthetic tube width multiplier (0: preset)");
  cmd->add_option("--tube-contrast", o->tube_contrast, "synthetic tube contrast multiplier (0: preset)");
  cmd->add_option("--annotated-fraction", o->annotated_fraction,
                  "share of synthetic studies with devices that are annotated (teacher, students' studies)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--device", o->device, "cpu, cuda, cuda:N or auto");
  cmd->add_option("--precision", o->precision, "fp32 or bf16 (default: bf16 on CUDA, fp32 on the CPU)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--set", o->sets, "section.key=value over every stage's preset config (repeatable)");
  auto dry_run = std::make_shared<bool>(false);
  cmd->add_flag("--dry-run", *dry_run, "print the plan (data, stages, models, epochs) and stop");
  cmd->callback([o, dry_run] {
    if (*dry_run) {
      const std::string precision =
          !o->precision.empty() ? o->precision : (o->device.rfind("cuda", 0) == 0 ? "bf16" : "fp32");
      std::printf("%s", make_demo_plan(*o, o->device, precision).str().c_str());
      return;
    }
    o->progress = ProgressLine::auto_mode();
    const auto r = run_demo(*o, [](const std::string& s) {
      std::printf("%s\n", s.c_str());
      std::fflush(stdout);
    });
    std::printf("\n%s\ndemo finished in %.1f s; runs, reports and checkpoints are in %s/runs\n",
                r.table.c_str(), r.seconds, o->out_dir.c_str());
  });
}

}  // namespace rz::cli

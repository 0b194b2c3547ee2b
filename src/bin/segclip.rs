//! The `segclip` command-line tool.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "segclip", version, about = "Open-vocabulary semantic segmentation with SegCLIP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check this implementation against a parity folder of the official PyTorch code.
    Parity {
        /// Folder with config.json and inference/text/decode .safetensors.
        dir: PathBuf,
    },
    /// Print the CLIP token ids of a text.
    Tokenize {
        text: String,
        /// Context length (77 for evaluation, 32 for SegCLIP training).
        #[arg(long, default_value_t = 77)]
        context: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Parity { dir } => {
            let report = segclip::parity::run(&dir)?;
            report.print();
            if !report.passed() {
                anyhow::bail!("parity failed for {}", dir.display());
            }
        }
        Command::Tokenize { text, context } => {
            let tok = segclip::vit::Tokenizer::new(context)?;
            let e = tok.encode(&text)?;
            if e.truncated {
                eprintln!("warning: the text is longer than {context} tokens and was truncated (end token kept)");
            }
            println!("{}", e.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "));
        }
    }
    Ok(())
}

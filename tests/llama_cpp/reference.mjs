// llama.cpp (through node-llama-cpp's prebuilt CPU build) as a reference for a GGUF model:
// the token ids of each prompt, the next-token distribution's top k, and a greedy generation
// (its tokens and its speed). Prints one JSON object.
//
//   node reference.mjs MODEL.gguf '{"prompts": ["..."], "top_k": 5, "generate": 0, "threads": 2,
//                                   "lora": [{"path": "A.gguf", "scale": 1}]}'
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, argText] = process.argv.slice(2);
const args = JSON.parse(argText ?? "{}");
const topK = args.top_k ?? 5;
const threads = args.threads ?? 2;

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
// LoRA adapters (llama.cpp's GGUF adapters), applied at run time over the base's weights.
const lora = args.lora?.length
    ? { adapters: args.lora.map((a) => ({ filePath: a.path, scale: a.scale ?? 1 })) }
    : undefined;
const context = await model.createContext({ threads, contextSize: 512, batchSize: 512, lora });

const sequence = context.getSequence();
// A prompt's tokens as llama.cpp's own tools make them: the BOS first when the model asks
// for one, special tokens matched in the text.
const tokenize = (text) => {
    const ids = [...model.tokenize(text, true)];
    const bos = model.tokens.bos;
    return model.tokens.shouldPrependBosToken && bos !== null && ids[0] !== bos ? [bos, ...ids] : ids;
};
const prompts = [];
for (const text of args.prompts ?? []) {
    await sequence.clearHistory();
    const ids = tokenize(text);
    const input = ids.map((id, i) => (i === ids.length - 1 ? [id, { generateNext: { probabilities: true } }] : id));
    const out = await sequence.controlledEvaluate(input);
    const probs = [...out[ids.length - 1].next.probabilities.entries()].sort((a, b) => b[1] - a[1]).slice(0, topK);
    prompts.push({
        text,
        ids,
        top: probs.map(([id, prob]) => ({ id, token: model.detokenize([id], true), prob })),
    });
}

let generation = null;
if (args.generate) {
    await sequence.clearHistory();
    const ids = tokenize(args.generate_prompt ?? "The capital of France is");
    const started = performance.now();
    let produced = 0;
    let firstAt = null;
    const generated = [];
    for await (const token of sequence.evaluate(ids, { temperature: 0 })) {
        if (firstAt === null) firstAt = performance.now();
        generated.push(token);
        produced += 1;
        if (produced >= args.generate) break;
    }
    const ended = performance.now();
    generation = {
        tokens: produced,
        ids: generated,
        prompt_tokens: ids.length,
        first_token_s: (firstAt - started) / 1000,
        // Tokens after the first, per second of decoding (the prompt's evaluation excluded).
        tokens_per_s: (produced - 1) / ((ended - firstAt) / 1000),
    };
}

console.log(JSON.stringify({ prompts, generation }));
await context.dispose();
await model.dispose();
await llama.dispose();

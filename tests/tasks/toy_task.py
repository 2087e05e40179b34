"""A task defined only in the tests: proof that a new task is one module and one config
(tests/tasks/configs/task/toy.yaml, found through hydra.searchpath), with dsflow/app.py untouched."""

from dsflow.tasks import Task, TaskOutput


class ToyTask(Task):
    """Flows every other sample, counts the flow's steps, reports the mean feature shift and
    draws one figure; its table lists the shifts of a sweep."""

    name = "toy"
    after_flow_options = ("label",)

    def __init__(self, name=None, *, keep_every: int = 2, label: str = "shift"):
        super().__init__(name)
        self.keep_every, self.label, self.steps_seen = int(keep_every), str(label), []

    def prepare(self, run):
        kept = run.source.subset(list(range(0, run.source.n, self.keep_every)))
        self.start_x = kept.x.clone()
        return TaskOutput(source=kept, summary={"toy_kept": kept.n})

    def start(self, run):
        def count(step, record, state):
            self.steps_seen.append(int(step))
            record["toy_step"] = int(step)  # reaches metrics.jsonl: task callbacks run before the logger

        return TaskOutput(callbacks=[count], summary={"toy_started": True})

    def finish(self, run):
        shift = float((run.flowed.x - self.start_x).norm(dim=1).mean())

        def figure(path):
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots()
            ax.plot(self.steps_seen)
            fig.savefig(path)
            plt.close(fig)

        return TaskOutput(summary={self.label: shift, "toy_steps": list(self.steps_seen)},
                          figures={"toy_steps": figure}, text=f"toy: mean shift {shift:.3f}")

    @classmethod
    def tables(cls, runs):
        rows = "".join(f"| {r.path.name} | {r.summary.get('shift')} |\n" for r in runs)
        return {"toy_table": "# Toy shifts\n\n| run | shift |\n|---|---|\n" + rows}

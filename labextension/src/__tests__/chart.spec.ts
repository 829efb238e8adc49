import { chartLayout, niceTicks } from '../chart';

describe('chart layout', () => {
  it('makes round ticks', () => {
    expect(niceTicks(0, 30, 5)).toEqual([0, 10, 20, 30]);
    expect(niceTicks(1.93, 3.07, 4)).toEqual([2, 2.5, 3]);
    expect(niceTicks(5, 5)).toEqual([5]);
  });

  it('maps the extremes of the data inside the plot box', () => {
    const layout = chartLayout(
      [
        { name: 'train loss', points: [[1, 3], [10, 1]], className: 'a' },
        { name: 'eval loss', points: [[5, 2]], className: 'b', markers: true }
      ],
      500,
      200
    );
    const { plot } = layout;
    const train = layout.paths[0].d;
    expect(train.startsWith(`M${plot.left.toFixed(1)},`)).toBe(true); // step 1 at the left edge
    expect(train).toContain(`L${plot.right.toFixed(1)},`); // step 10 at the right edge
    // the highest loss is near the top, the lowest near the bottom (5% padding)
    const ys = train.match(/,(\d+\.\d)/g)!.map(s => Number(s.slice(1)));
    expect(ys[0]).toBeLessThan(ys[1]);
    expect(ys[0]).toBeGreaterThanOrEqual(plot.top);
    expect(ys[1]).toBeLessThanOrEqual(plot.bottom);
    expect(layout.paths[1].markers).toHaveLength(1);
    expect(layout.xTicks.map(t => t.value)).toContain(10);
  });

  it('survives a single point and no data', () => {
    expect(chartLayout([{ name: 'x', points: [[3, 2]], className: 'a' }]).paths[0].d).toMatch(/^M[\d.]+,[\d.]+$/);
    expect(chartLayout([]).paths).toEqual([]);
  });
});

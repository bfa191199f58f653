import type { Theme } from 'vitepress';
import DefaultTheme from 'vitepress/theme';
import { defineAsyncComponent } from 'vue';
import './custom.css';

export default {
  extends: DefaultTheme,
  enhanceApp({ app }) {
    // Loaded on the playground page only: it pulls in the library and, lazily, the backends.
    app.component(
      'TesseraPlayground',
      defineAsyncComponent(() => import('./TesseraPlayground.vue')),
    );
  },
} satisfies Theme;
